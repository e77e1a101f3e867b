// Moving between views. app.js, which builds the views, registers its router here at
// start, so that a view can route or ask for a sign-in without importing the other views.

let router = null;

export function setRouter(next) {
  router = next;
}

// Show the view the address names (the overview or a park page).
export function route() {
  router.route();
}

// Show the sign-in form, with the reason (an i18n key) when there is one.
export function showSignIn(reason = "") {
  router.showSignIn(reason);
}

export function isCurrent(view) {
  return router.current() === view;
}
