// A server's settings (the `settings` permission): its name. The address keeps the name it was created with.

import {api} from './api.js';
import {describe} from './errors.js';
import {h, say} from './ui.js';

export class SettingsView {
  constructor(root, onChange) {
    this.root = root;
    this.onChange = onChange;
    this.instance = null;
    this.name = h('input', {id: 'settings-name', required: true, maxlength: '63', pattern: '[a-z][a-z0-9\\-]{0,62}',
      autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'settings-name-help'});
    this.message = h('p', {className: 'message settings-message', role: 'status'});
    root.replaceChildren(h('form', {className: 'panel settings-form', novalidate: true,
      onsubmit: (event) => this.save(event)},
    h('div', {className: 'field'}, h('label', {for: 'settings-name'}, 'New name'), this.name,
      h('small', {id: 'settings-name-help'}, 'Lower-case letters, digits and dashes; starts with a letter. '
        + 'The server’s address does not change.')),
    h('div', {className: 'buttons'}, h('button', {type: 'submit', className: 'primary'}, 'Rename')),
    this.message));
  }

  attach(instance) {
    if (this.instance?.id !== instance.id) {
      this.name.value = instance.name;
      say(this.message, '');
    }
    this.instance = instance;
  }

  detach() {
    this.instance = null;
  }

  async save(event) {
    event.preventDefault();
    if (!this.name.checkValidity()) {
      say(this.message, 'Enter a name of lower-case letters, digits and dashes, starting with a letter.', 'error');
      this.name.focus();
      return;
    }
    try {
      const instance = await api.patch(`/api/instances/${this.instance.id}`, {json: {name: this.name.value}});
      say(this.message, `Renamed to ${instance.name}.`, 'ok');
      this.onChange();
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }
}
