// The account page: the SSH public keys that sign you in to your servers' files over SFTP.
// Add one (paste a line of id_ed25519.pub), see each key's fingerprint, remove one.

import {api} from './api.js';
import {describe} from './errors.js';
import {confirmAction, fill, h, say, time} from './ui.js';

let nameInput;
let keyInput;
let message;
let table;

export function setup() {
  const root = document.getElementById('view-account');
  nameInput = h('input', {id: 'ssh-key-name', name: 'name', required: true, maxlength: '100', autocomplete: 'off',
    placeholder: 'laptop'});
  keyInput = h('textarea', {id: 'ssh-key-value', name: 'public_key', rows: '3', required: true, spellcheck: 'false',
    placeholder: 'ssh-ed25519 AAAA… you@laptop', 'aria-describedby': 'ssh-key-help'});
  message = h('p', {className: 'message', id: 'ssh-keys-message', role: 'status'});
  table = h('tbody');
  root.replaceChildren(
    h('h1', {id: 'account-title', tabindex: '-1'}, 'Account'),
    h('section', {className: 'panel', 'aria-labelledby': 'ssh-keys-title'},
      h('h2', {id: 'ssh-keys-title'}, 'SSH keys'),
      h('p', {}, 'Any of these keys signs you in to your servers’ files over SFTP. Each server’s page shows the '
        + 'address and the user name to use.'),
      h('form', {id: 'ssh-key-form', onsubmit: add},
        h('div', {className: 'fields'},
          h('div', {className: 'field'}, h('label', {for: 'ssh-key-name'}, 'Key name'), nameInput),
          h('div', {className: 'field wide'}, h('label', {for: 'ssh-key-value'}, 'Public key'), keyInput,
            h('small', {id: 'ssh-key-help'}, 'One line of your id_ed25519.pub (or id_rsa.pub). Never paste a '
              + 'private key.'))),
        h('div', {className: 'buttons'}, h('button', {type: 'submit', className: 'primary'}, 'Add key'))),
      message,
      h('div', {className: 'table-wrap'}, h('table', {className: 'ssh-keys'},
        h('caption', {className: 'visually-hidden'}, 'Your SSH keys'),
        h('thead', {}, h('tr', {}, ['Name', 'Fingerprint', 'Type', 'Added', ''].map((l) => h('th', {scope: 'col'},
          l ? l : h('span', {className: 'visually-hidden'}, 'Actions'))))),
        table))));
}

function row(key) {
  return h('tr', {dataset: {keyId: key.id}}, h('td', {}, key.name), h('td', {}, h('code', {}, key.fingerprint)),
    h('td', {}, key.algorithm), h('td', {}, time(key.created_at)),
    h('td', {}, h('button', {type: 'button', className: 'danger', 'aria-label': `Remove key ${key.name}`,
      onclick: () => remove(key)}, 'Remove')));
}

async function load() {
  try {
    const page = await api.get('/api/ssh-keys?limit=500');
    fill(table, page.items.map(row));
    if (!page.items.length) say(message, 'No SSH keys yet: add one to sign in over SFTP without a password.');
  } catch (error) {
    say(message, `Your keys could not be loaded. ${describe(error)}`, 'error');
  }
}

async function add(event) {
  event.preventDefault();
  const name = nameInput.value.trim();
  const publicKey = keyInput.value.trim();
  if (!name || !publicKey) {
    say(message, 'Give the key a name and paste its public key.', 'error');
    return;
  }
  try {
    const key = await api.post('/api/ssh-keys', {json: {name, public_key: publicKey}});
    nameInput.value = '';
    keyInput.value = '';
    await load();
    say(message, `Added “${key.name}” (${key.fingerprint}).`, 'ok');
  } catch (error) {
    say(message, `The key was not added. ${describe(error)}`, 'error');
  }
}

async function remove(key) {
  if (!await confirmAction(`Remove the key “${key.name}”? It will no longer sign in anywhere.`, 'Remove key')) return;
  try {
    await api.del(`/api/ssh-keys/${encodeURIComponent(key.id)}`);
    await load();
    say(message, `Removed “${key.name}”.`, 'ok');
  } catch (error) {
    say(message, `The key was not removed. ${describe(error)}`, 'error');
  }
}

export function enter() {
  say(message, '');
  load();
}

export function leave() {}
