// The page's fixed parts: the view's container, the breadcrumb, the top bar's buttons and
// the footer.

import { getJSON } from "./api.js";
import { setConn } from "./connection.js";
import { esc } from "./format.js";
import { t } from "./i18n.js";
import { route, showSignIn } from "./nav.js";

export const app = document.getElementById("app");
export const langButton = document.getElementById("lang");
export const signOutButton = document.getElementById("signout");
export const foot = document.getElementById("foot");
const crumbs = document.getElementById("crumbs");

export function setCrumbs(items) {
  crumbs.innerHTML = items
    .map((item, i) => {
      const sep = i ? '<span class="sep">/</span>' : "";
      return item.href
        ? `${sep}<a href="${esc(item.href)}">${esc(item.label)}</a>`
        : `${sep}<span class="here">${esc(item.label)}</span>`;
    })
    .join("");
}

// Starts a view: its breadcrumb, a loading message, then its first resource. Returns the
// body, or null when the view cannot go on: the request was aborted (the view was left),
// the client must sign in (the sign-in shows), the resource is unknown (`notFoundHtml`
// shows, when given), or it failed (an error shows, and the route is tried again in 5 s).
export async function openView(crumbItems, path, signal, timers, notFoundHtml = null) {
  setCrumbs(crumbItems);
  setConn("idle");
  app.innerHTML = `<div class="err">${esc(t("charts.loading"))}</div>`;
  try {
    return await getJSON(path, signal);
  } catch (err) {
    if (signal.aborted) return null;
    if (err.status === 404 && notFoundHtml !== null) {
      setConn("idle");
      app.innerHTML = notFoundHtml;
    } else if (err.status === 401) {
      showSignIn();
    } else {
      setConn("error");
      app.innerHTML = `<div class="err">${esc(t("conn.error"))}</div>`;
      timers.push(setTimeout(() => route(), 5_000));
    }
    return null;
  }
}
