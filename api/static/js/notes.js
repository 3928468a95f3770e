// The notepad: every save names the version it edits (If-Match). On 412 the note was changed
// elsewhere: both versions are shown and the user chooses which to keep.

import {api} from './api.js';
import {describe} from './errors.js';
import {h, say} from './ui.js';

let editor;
let message;
let saveButton;
let conflict;
let theirsArea;
let version = null;
let theirs = null;
let saving = false;

export function setup() {
  const root = document.getElementById('view-notes');
  editor = h('textarea', {id: 'notes-editor', rows: '14', spellcheck: 'true', 'aria-describedby': 'notes-message'});
  message = h('p', {className: 'message', id: 'notes-message', role: 'status'});
  saveButton = h('button', {type: 'submit', className: 'primary'}, 'Save notes');
  theirsArea = h('textarea', {id: 'notes-theirs', rows: '8', readonly: true});
  conflict = h('section', {className: 'panel conflict', id: 'notes-conflict', hidden: true,
    'aria-labelledby': 'conflict-title'},
  h('h2', {id: 'conflict-title', tabindex: '-1'}, 'Your notes were changed elsewhere'),
  h('p', {}, 'Someone (perhaps you, in another tab) saved a newer version while you were editing. '
    + 'Your text is still in the editor above; the saved version is below. Choose which to keep.'),
  h('label', {for: 'notes-theirs'}, 'The saved version'), theirsArea,
  h('div', {className: 'buttons'},
    h('button', {type: 'button', id: 'keep-mine', className: 'primary', onclick: keepMine}, 'Keep mine'),
    h('button', {type: 'button', id: 'use-theirs', onclick: useTheirs}, 'Use the saved version')));
  root.replaceChildren(h('h1', {id: 'notes-title', tabindex: '-1'}, 'Notes'),
    h('p', {}, 'A private notepad for whatever you want to remember about your servers.'),
    h('form', {id: 'notes-form', onsubmit: save},
      h('label', {for: 'notes-editor'}, 'Your notes'), editor,
      h('div', {className: 'buttons'}, saveButton,
        h('button', {type: 'button', onclick: load}, 'Reload'),
        h('span', {id: 'notes-version', className: 'muted'}))),
    message, conflict);
}

export function enter() {
  load();
}

function setVersion(value) {
  version = value;
  document.getElementById('notes-version').textContent = value === null ? '' : `Version ${value}`;
}

async function load() {
  say(message, 'Loading…');
  editor.disabled = true;
  try {
    const note = await api.get('/api/notes');
    editor.value = note.content;
    setVersion(note.version);
    conflict.hidden = true;
    say(message, note.content ? '' : 'Your notepad is empty. Write something and save it.');
  } catch (error) {
    setVersion(null);
    say(message, `Your notes could not be loaded. ${describe(error)}`, 'error');
  } finally {
    editor.disabled = false;
  }
}

async function put(content, ifMatch) {
  return api.put('/api/notes', {json: {content}, headers: {'If-Match': String(ifMatch)}});
}

async function save(event) {
  event?.preventDefault();
  if (saving) return;
  if (version === null) {
    say(message, 'Load your notes before saving.', 'error');
    return;
  }
  saving = true;
  saveButton.disabled = true;
  say(message, 'Saving…');
  try {
    const note = await put(editor.value, version);
    setVersion(note.version);
    conflict.hidden = true;
    say(message, 'Saved.', 'ok');
  } catch (error) {
    if (error.status === 412) await showConflict();
    else say(message, describe(error), 'error');
  } finally {
    saving = false;
    saveButton.disabled = false;
  }
}

async function showConflict() {
  try {
    theirs = await api.get('/api/notes');
  } catch (error) {
    say(message, `${describe({code: 'version_conflict'})} The saved version could not be loaded: ${describe(error)}`,
      'error');
    return;
  }
  theirsArea.value = theirs.content;
  conflict.hidden = false;
  say(message, describe({code: 'version_conflict'}), 'error');
  document.getElementById('conflict-title').focus();
}

async function keepMine() {
  if (!theirs) return;
  setVersion(theirs.version); // overwrite exactly the version the user has seen
  theirs = null;
  await save();
}

function useTheirs() {
  if (!theirs) return;
  editor.value = theirs.content;
  setVersion(theirs.version);
  theirs = null;
  conflict.hidden = true;
  say(message, 'Now showing the saved version.', 'ok');
  editor.focus();
}
