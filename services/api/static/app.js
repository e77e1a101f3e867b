// parksense operators' dashboard: an overview of all parks and a live page per park.
// Hash routes: "#/" (overview) and "#/parks/{park_id}". The park page follows the park's
// Server-Sent Events stream; the overview refreshes each park's signals every few seconds.
// Native ES modules, no build step: each view and concern has its own module.

import { esc } from "./format.js";
import { lang, setLang, t } from "./i18n.js";
import { setRouter } from "./nav.js";
import { OverviewView } from "./overview.js";
import { foot, langButton, signOutButton } from "./page.js";
import { ParkView } from "./park.js";
import { SignInView, loadSession, signOut } from "./session.js";

let view = null;

function route() {
  if (view) view.destroy();
  const match = window.location.hash.match(/^#\/parks\/([a-z0-9][a-z0-9_-]{0,63})\/?$/);
  view = match ? new ParkView(match[1]) : new OverviewView();
  view.start();
}

function showSignIn(reason = "") {
  if (view) view.destroy();
  view = new SignInView(reason);
  view.start();
}

function renderChrome() {
  langButton.textContent = t("lang.toggle");
  signOutButton.textContent = t("signin.signout");
  foot.innerHTML = `${esc(t("foot.text"))} <a href="/docs">/docs</a>`;
}

setRouter({ route, showSignIn, current: () => view });

langButton.addEventListener("click", () => {
  setLang(lang() === "zh" ? "en" : "zh");
  renderChrome();
  if (view) view.relabel();
});

signOutButton.addEventListener("click", signOut);
window.addEventListener("hashchange", route);
renderChrome();
loadSession().then(
  (found) => (found ? route() : showSignIn()),
  () => route(),
);
