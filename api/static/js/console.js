// The console of one server: a single-use ticket from POST /api/instances/{id}/console, then a
// WebSocket. Every way it can end (error, close, 10 s connect timeout, leaving the page) goes
// through teardown(), which drops the socket's handlers and references and puts the button back
// to "Reconnect"; it never stays at "Connecting".

import {api} from './api.js';
import {describe, describeClose} from './errors.js';
import {h, say} from './ui.js';

export const CONNECT_TIMEOUT_MS = 10000;
export const MAX_LINES = 1000;

export class ConsoleView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.socket = null;
    this.timer = null;
    this.generation = 0; // bumps on every teardown, so late answers of an old attempt are ignored
    this.state = 'idle'; // idle | connecting | open | closed
    this.button = h('button', {type: 'button', className: 'primary console-toggle', onclick: () => this.toggle()},
      'Open console');
    this.status = h('p', {className: 'message console-status', role: 'status'});
    this.output = h('pre', {className: 'console-out', tabindex: '0', 'aria-label': 'Console output'});
    this.input = h('input', {type: 'text', id: 'console-input', autocomplete: 'off', spellcheck: 'false',
      disabled: true, placeholder: 'Type a command and press Enter'});
    this.form = h('form', {className: 'console-form', onsubmit: (event) => this.send(event)},
      h('label', {for: 'console-input'}, 'Command'), this.input,
      h('button', {type: 'submit', disabled: true}, 'Send'));
    root.replaceChildren(h('div', {className: 'toolbar'}, this.button, this.status), this.output, this.form);
  }

  attach(instance) {
    if (this.instance?.id !== instance.id) {
      this.detach();
      this.output.replaceChildren();
      this.instance = instance;
      this.setState('idle', instance.status === 'running' ? '' : 'The console needs a running server.');
    }
    this.instance = instance;
  }

  detach() {
    if (this.socket || this.state === 'connecting') this.teardown('Console closed.', 'idle');
    this.instance = null;
  }

  toggle() {
    if (this.state === 'connecting' || this.state === 'open') this.teardown('Console closed.');
    else this.connect();
  }

  async connect() {
    const generation = ++this.generation;
    this.setState('connecting', 'Connecting…');
    this.timer = setTimeout(() => {
      if (generation === this.generation) {
        this.teardown(`The console did not connect within ${CONNECT_TIMEOUT_MS / 1000} seconds. Try again.`);
      }
    }, CONNECT_TIMEOUT_MS);
    let ticket;
    try {
      ticket = await api.post(`/api/instances/${this.instance.id}/console`);
    } catch (error) {
      if (generation === this.generation) this.teardown(describe(error));
      return;
    }
    if (generation !== this.generation) return;
    let socket;
    try {
      socket = new WebSocket(ticket.url);
    } catch (error) {
      this.teardown(`The console could not be opened: ${error.message}`);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (generation !== this.generation) return;
      clearTimeout(this.timer);
      this.timer = null;
      this.setState('open', 'Connected.');
      this.input.focus();
    };
    socket.onmessage = (event) => {
      if (generation === this.generation) this.append(String(event.data));
    };
    socket.onerror = () => {
      // A close event always follows; it carries the reason. Nothing to do here but not hang.
    };
    socket.onclose = (event) => {
      if (generation === this.generation) this.teardown(describeClose(event.code));
    };
  }

  /** Ends the attempt or session on every path: clears timer, handlers and references. */
  teardown(message, state = 'closed') {
    this.generation += 1;
    clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
      if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
        try {
          socket.close(1000, 'client closed');
        } catch {
          // already closing
        }
      }
    }
    this.setState(state, message);
  }

  send(event) {
    event.preventDefault();
    const command = this.input.value;
    if (!command.trim() || this.state !== 'open' || !this.socket) return;
    try {
      this.socket.send(command);
      this.append(`> ${command}`, 'echo');
      this.input.value = '';
    } catch (error) {
      this.teardown(`The command could not be sent: ${error.message}`);
    }
  }

  append(text, kind = 'line') {
    const nearBottom = this.output.scrollHeight - this.output.scrollTop - this.output.clientHeight < 40;
    for (const line of text.replace(/\n$/, '').split('\n')) {
      this.output.append(h('span', {className: kind}, line + '\n'));
    }
    while (this.output.childElementCount > MAX_LINES) this.output.firstElementChild.remove();
    if (nearBottom) this.output.scrollTop = this.output.scrollHeight;
  }

  setState(state, message) {
    this.state = state;
    this.root.dataset.state = state;
    const labels = {idle: 'Open console', connecting: 'Cancel', open: 'Close console', closed: 'Reconnect'};
    this.button.textContent = labels[state];
    const open = state === 'open';
    this.input.disabled = !open;
    this.form.querySelector('button').disabled = !open;
    say(this.status, message, state === 'closed' && message !== 'Console closed.' ? 'error' : 'info');
  }
}
