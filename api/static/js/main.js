// The portal's entry point: sign-in, the views behind the hash (#servers, #support, #notes,
// #account, #desk, #admin), and the reactions every view shares to 401 (signed out) and 402 (billing).

import {onProblem} from './api.js';
import {currentUser, setupSignIn, showSignIn, signOut} from './auth.js';
import * as account from './account.js';
import * as admin from './admin.js';
import * as announcements from './announcements.js';
import * as billing from './billing.js';
import * as desk from './desk.js';
import {describe} from './errors.js';
import * as notes from './notes.js';
import * as servers from './servers.js';
import * as support from './support.js';
import {flash} from './ui.js';

const VIEWS = {servers, support, notes, account, desk, admin};
const STAFF_VIEWS = new Set(['desk', 'admin']);
let user = null;
let active = null;

function show(id) {
  for (const section of document.querySelectorAll('main > .view')) {
    section.hidden = section.id !== `view-${id}`;
  }
}

function route() {
  if (!user) {
    show('signin');
    return;
  }
  let name = location.hash.replace('#', '') || 'servers';
  if (!VIEWS[name] || (STAFF_VIEWS.has(name) && !user.admin)) name = 'servers';
  if (active && active !== name) VIEWS[active].leave?.();
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.view === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  show(name);
  const changed = active !== name;
  active = name;
  VIEWS[name].enter(user);
  if (changed) document.getElementById(`view-${name}`).querySelector('h1')?.focus?.();
}

function signedIn(me) {
  user = me;
  flash('');
  document.getElementById('nav').hidden = false;
  document.getElementById('nav-admin').hidden = !me.admin;
  document.getElementById('nav-desk').hidden = !me.admin;
  document.getElementById('sign-out').hidden = false;
  document.getElementById('who').textContent = me.email + (me.admin ? ' (operator)' : '');
  billing.start();
  announcements.start();
  route();
}

function signedOut(message = '') {
  if (active) VIEWS[active].leave?.();
  active = null;
  user = null;
  signOut();
  billing.stop();
  announcements.stop();
  document.getElementById('nav').hidden = true;
  document.getElementById('sign-out').hidden = true;
  document.getElementById('who').textContent = '';
  showSignIn(message);
  show('signin');
  document.getElementById('signin-token').focus();
}

onProblem((error) => {
  if (error.status === 401 && user) signedOut(describe(error));
  if (error.status === 402) billing.blocked(error);
});

window.addEventListener('hashchange', route);
document.getElementById('sign-out').addEventListener('click', () => signedOut('You are signed out.'));
setupSignIn(signedIn);
for (const view of Object.values(VIEWS)) view.setup();

currentUser().then((me) => {
  if (me) signedIn(me);
  else signedOut('');
}).catch((error) => {
  show('signin');
  showSignIn(describe(error));
});
