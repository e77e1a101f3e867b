"""Bytes → Python objects: a telemetry payload is one sample object or an array of them."""

from __future__ import annotations

import json
from dataclasses import dataclass

import orjson

from schemas.telemetry import MAX_PAYLOAD_BYTES, MAX_SAMPLES_PER_MESSAGE
from services.core.readings import RejectReason


@dataclass(frozen=True, slots=True)
class DecodeFailure:
    """Why a whole payload could not be decoded."""

    reason: RejectReason
    detail: str


def decode_json(payload: bytes) -> object | DecodeFailure:
    """Decode UTF-8 JSON, accepting NaN and Infinity so that they are refused per reading.

    orjson is the fast path; only payloads it refuses are tried again with the standard
    library, which reads ``NaN``/``Infinity`` literals as floats. The payload must be UTF-8
    (the contract says so): the standard library would also guess UTF-16 and UTF-32, and
    decode encoded surrogates, so the bytes are decoded strictly first.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        return DecodeFailure(
            RejectReason.OVERSIZE, f"payload is {len(payload)} bytes, limit {MAX_PAYLOAD_BYTES}"
        )
    try:
        decoded: object = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as bad:
            return DecodeFailure(
                RejectReason.INVALID_UTF8,
                f"payload is not UTF-8: byte {bad.start} ({payload[bad.start]:#04x}) {bad.reason}",
            )
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError):
            return DecodeFailure(RejectReason.MALFORMED_JSON, f"not JSON: {exc}")
    return decoded


def decode_samples(payload: bytes) -> list[object] | DecodeFailure:
    """Decode a telemetry payload into its list of (not yet validated) samples."""
    decoded = decode_json(payload)
    if isinstance(decoded, DecodeFailure):
        return decoded
    if isinstance(decoded, dict):
        return [decoded]
    if isinstance(decoded, list):
        if not decoded:
            return DecodeFailure(RejectReason.INVALID_PAYLOAD, "empty sample array")
        if len(decoded) > MAX_SAMPLES_PER_MESSAGE:
            return DecodeFailure(
                RejectReason.TOO_MANY_SAMPLES,
                f"{len(decoded)} samples, limit {MAX_SAMPLES_PER_MESSAGE}",
            )
        return decoded
    return DecodeFailure(
        RejectReason.INVALID_PAYLOAD,
        f"payload is a JSON {type(decoded).__name__}, expected an object or an array",
    )
