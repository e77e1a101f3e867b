// The page's fixed parts: the view's container, the breadcrumb, the top bar's buttons and
// the footer.

import { esc } from "./format.js";

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
