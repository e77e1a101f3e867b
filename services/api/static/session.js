// Signing in: with API keys on, the page signs in once with a key and then holds an
// HttpOnly session cookie (GET/POST/DELETE /v1/session); no secret is ever in a URL.

import { getJSON } from "./api.js";
import { setConn } from "./connection.js";
import { esc } from "./format.js";
import { t } from "./i18n.js";
import { route, showSignIn } from "./nav.js";
import { app, setCrumbs, signOutButton } from "./page.js";

// Who the page is signed in as (GET /v1/session), or null when a key is needed.
let session = null;

export async function loadSession() {
  try {
    session = await getJSON("/v1/session");
  } catch (err) {
    if (err.status !== 401) throw err;
    session = null;
  }
  signOutButton.hidden = session?.via !== "session";
  return session;
}

export class SignInView {
  constructor(reason) {
    this.reason = reason;
  }

  start() {
    setCrumbs([{ label: t("signin.title") }]);
    setConn("signedout");
    signOutButton.hidden = true;
    app.innerHTML = `<form class="signin" data-role="signin" autocomplete="off">
      <h1>${esc(t("signin.title"))}</h1>
      <p class="muted">${esc(t("signin.explain"))}</p>
      <label for="signin-key">${esc(t("signin.key"))}</label>
      <input id="signin-key" name="key" type="password" required maxlength="256" spellcheck="false" autocomplete="off">
      <button type="submit">${esc(t("signin.submit"))}</button>
      <p class="signin-error" data-role="signin-error" data-reason="${esc(this.reason)}" role="alert">${esc(this.reason ? t(this.reason) : "")}</p>
    </form>`;
    const form = app.querySelector("form");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit(form);
    });
    form.querySelector("input").focus();
  }

  async submit(form) {
    const input = form.querySelector("input");
    const error = form.querySelector('[data-role="signin-error"]');
    const button = form.querySelector("button");
    button.disabled = true;
    let response;
    try {
      response = await fetch("/v1/session", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        credentials: "same-origin",
        body: JSON.stringify({ key: input.value.trim() }),
      });
    } catch {
      response = null;
    }
    button.disabled = false;
    if (response && response.status === 201) {
      input.value = "";
      await loadSession().catch(() => {});
      route();
      return;
    }
    this.reason = response && [401, 422].includes(response.status) ? "signin.bad" : "conn.error";
    error.dataset.reason = this.reason;
    error.textContent = t(this.reason);
  }

  destroy() {}

  relabel() {
    this.start();
  }
}

export async function signOut() {
  await fetch("/v1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  session = null;
  showSignIn("signin.out");
}
