// Files of one server: browse folders, view and edit text files, upload and download.
// bad_path and too-large answers are shown as sentences next to the form that caused them.

import {api} from './api.js';
import {describe} from './errors.js';
import {fill, formatBytes, h, say} from './ui.js';

export const MAX_FILE_BYTES = 8 * 1024 * 1024;
const MAX_EDIT_BYTES = 1024 * 1024;

function join(folder, name) {
  return (folder.endsWith('/') ? folder : folder + '/') + name;
}

function parent(path) {
  const parts = path.split('/').filter(Boolean);
  parts.pop();
  return '/' + parts.join('/');
}

export class FilesView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.path = '/';
    this.editing = null;
    this.pathInput = h('input', {id: 'files-path', type: 'text', value: '/', spellcheck: 'false', autocomplete: 'off'});
    this.message = h('p', {className: 'message files-message', role: 'status'});
    this.table = h('tbody');
    this.upload = h('input', {id: 'files-upload', type: 'file', className: 'file-input',
      onchange: () => this.uploadFile()});
    this.editorTitle = h('h3', {id: 'editor-title', tabindex: '-1'});
    this.editor = h('textarea', {id: 'files-editor', rows: '14', spellcheck: 'false',
      'aria-labelledby': 'editor-title'});
    this.editorPanel = h('div', {className: 'editor', hidden: true}, this.editorTitle, this.editor,
      h('div', {className: 'buttons'},
        h('button', {type: 'button', className: 'primary', onclick: () => this.save()}, 'Save file'),
        h('button', {type: 'button', onclick: () => this.download(this.editing)}, 'Download'),
        h('button', {type: 'button', onclick: () => this.closeEditor()}, 'Close file')));
    root.replaceChildren(
      h('form', {className: 'path-form', onsubmit: (event) => {
        event.preventDefault();
        this.open(this.pathInput.value.trim() || '/');
      }},
      h('label', {for: 'files-path'}, 'Folder'), this.pathInput, h('button', {type: 'submit'}, 'Open'),
      h('button', {type: 'button', onclick: () => this.open(parent(this.path))}, 'Up'),
      h('label', {for: 'files-upload', className: 'button'}, 'Upload a file'), this.upload),
      this.message,
      h('div', {className: 'table-wrap'}, h('table', {className: 'files'},
        h('caption', {className: 'visually-hidden'}, 'Files in the folder'),
        h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Name'), h('th', {scope: 'col'}, 'Size'),
          h('th', {scope: 'col'}, h('span', {className: 'visually-hidden'}, 'Actions')))),
        this.table)),
      this.editorPanel);
  }

  attach(instance) {
    if (this.instance?.id === instance.id) {
      this.instance = instance;
      return;
    }
    this.instance = instance;
    this.path = '/';
    this.pathInput.value = '/';
    this.loaded = false;
    this.closeEditor();
    fill(this.table);
    say(this.message, '');
  }

  detach() {
    this.instance = null;
  }

  load() {
    if (!this.loaded) this.open(this.path);
  }

  base() {
    return `/api/instances/${this.instance.id}/files`;
  }

  async open(path) {
    if (!this.instance) return;
    say(this.message, 'Loading…');
    try {
      const listing = await api.get(`${this.base()}?path=${encodeURIComponent(path)}`);
      this.loaded = true;
      this.path = listing.path;
      this.pathInput.value = listing.path;
      const entries = [...listing.entries].sort((a, b) => (a.type === b.type ? a.name.localeCompare(b.name)
        : a.type === 'dir' ? -1 : 1));
      fill(this.table, entries.map((entry) => this.row(entry)));
      say(this.message, entries.length ? '' : 'This folder is empty.');
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  row(entry) {
    const path = join(this.path, entry.name);
    const name = entry.type === 'dir'
      ? h('button', {type: 'button', className: 'link', onclick: () => this.open(path)}, `${entry.name}/`)
      : h('button', {type: 'button', className: 'link', onclick: () => this.view(path)}, entry.name);
    return h('tr', {dataset: {name: entry.name}}, h('td', {}, name),
      h('td', {}, entry.type === 'dir' ? 'folder' : formatBytes(entry.size)),
      h('td', {}, entry.type === 'dir' ? '' : h('button', {type: 'button', className: 'quiet small',
        'aria-label': `Download ${entry.name}`, onclick: () => this.download(path)}, 'Download')));
  }

  async view(path) {
    say(this.message, 'Opening…');
    try {
      const bytes = new Uint8Array(await api.get(`${this.base()}/content?path=${encodeURIComponent(path)}`,
        {as: 'bytes'}));
      if (bytes.length > MAX_EDIT_BYTES || bytes.subarray(0, 8192).includes(0)) {
        say(this.message, 'This file is not text (or too large to edit here): download it instead.', 'info');
        return;
      }
      this.editing = path;
      this.editorTitle.textContent = `Editing ${path}`;
      this.editor.value = new TextDecoder().decode(bytes);
      this.editorPanel.hidden = false;
      say(this.message, '');
      this.editor.focus();
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  closeEditor() {
    this.editing = null;
    this.editorPanel.hidden = true;
  }

  async save() {
    const path = this.editing;
    if (!path) return;
    const body = new TextEncoder().encode(this.editor.value);
    if (body.length > MAX_FILE_BYTES) {
      say(this.message, describe({code: 'too_large'}), 'error');
      return;
    }
    say(this.message, 'Saving…');
    try {
      await api.put(`${this.base()}/content?path=${encodeURIComponent(path)}`, {body,
        headers: {'Content-Type': 'application/octet-stream'}});
      await this.open(this.path);
      say(this.message, `Saved ${path}.`, 'ok');
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  async uploadFile() {
    const file = this.upload.files[0];
    this.upload.value = '';
    if (!file) return;
    if (file.size > MAX_FILE_BYTES) {
      say(this.message, describe({code: 'too_large'}), 'error');
      return;
    }
    const path = join(this.path, file.name);
    say(this.message, `Uploading ${file.name}…`);
    try {
      await api.put(`${this.base()}/content?path=${encodeURIComponent(path)}`, {body: file,
        headers: {'Content-Type': 'application/octet-stream'}});
      await this.open(this.path);
      say(this.message, `Uploaded ${path}.`, 'ok');
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  async download(path) {
    if (!path) return;
    try {
      const bytes = await api.get(`${this.base()}/content?path=${encodeURIComponent(path)}`, {as: 'bytes'});
      const url = URL.createObjectURL(new Blob([bytes], {type: 'application/octet-stream'}));
      const link = h('a', {href: url, download: path.split('/').pop() || 'download'});
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }
}
