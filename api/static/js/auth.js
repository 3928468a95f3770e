// Signing in and out: the token lives in sessionStorage only, and is never shown again.

import {api, clearToken, getToken, setToken} from './api.js';
import {describe} from './errors.js';
import {say} from './ui.js';

/** Resolves with the signed-in user ({id, email, admin}) or null. */
export async function currentUser() {
  if (!getToken()) return null;
  try {
    return await api.get('/api/me');
  } catch (error) {
    if (error.status === 401) {
      clearToken();
      return null;
    }
    throw error;
  }
}

/** Wires the sign-in form; `onSignedIn(user)` runs after a successful sign-in. */
export function setupSignIn(onSignedIn) {
  const form = document.getElementById('signin-form');
  const input = document.getElementById('signin-token');
  const message = document.getElementById('signin-error');
  const button = form.querySelector('button[type=submit]');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      say(message, 'Enter your API token.', 'error');
      input.focus();
      return;
    }
    button.disabled = true;
    say(message, 'Signing in…');
    setToken(token);
    try {
      const user = await api.get('/api/me');
      input.value = '';
      say(message, '');
      onSignedIn(user);
    } catch (error) {
      clearToken();
      say(message, describe(error), 'error');
      input.select();
    } finally {
      button.disabled = false;
    }
  });
}

/** Shows the sign-in screen with an optional message (e.g. after a 401). */
export function showSignIn(text = '') {
  say(document.getElementById('signin-error'), text, text ? 'error' : 'info');
}

export function signOut() {
  clearToken();
}
