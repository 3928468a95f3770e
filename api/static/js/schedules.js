// Schedules of one server: list (next run, last run), create and edit (cron, timezone, a chain of
// tasks with delays), pause and resume, run now, delete, and each schedule's runs with every task's
// result. Validation errors name the field (`cron: …`, `tasks.1.payload: …`) and are shown as sent.

import {api, newKey} from './api.js';
import {describe} from './errors.js';
import {confirmAction, fill, h, say, time} from './ui.js';

const ACTIONS = {command: 'Console command', power: 'Power action', backup: 'Backup'};
const POWER = ['start', 'stop', 'restart'];
const RUN_STATUS = {pending: 'Pending', running: 'Running', succeeded: 'Succeeded', failed: 'Failed',
  missed: 'Missed', skipped: 'Skipped'};
const TASK_STATUS = {pending: 'pending', running: 'running', succeeded: 'done', failed: 'failed', not_run: 'not run'};
const ZONES = ['UTC', 'Europe/London', 'Europe/Berlin', 'Europe/Paris', 'America/New_York', 'America/Chicago',
  'America/Los_Angeles', 'America/Sao_Paulo', 'Asia/Tokyo', 'Asia/Kolkata', 'Australia/Sydney'];

function localZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

function taskText(task) {
  if (task.action === 'backup') return 'backup';
  if (task.action === 'power') return `power ${task.payload}`;
  return `“${task.payload}”`;
}

export class SchedulesView {
  constructor(root) {
    this.root = root;
    this.instance = null;
    this.loaded = false;
    this.editing = null; // the schedule being edited, or {} for a new one
    this.openRuns = null; // the schedule whose runs are shown
    this.runsCursor = null;
    this.message = h('p', {className: 'message schedules-message', role: 'status'});
    this.newButton = h('button', {type: 'button', className: 'primary', onclick: () => this.openForm({})},
      'New schedule');
    this.table = h('tbody');
    this.formHolder = h('div');
    this.runsHolder = h('div', {className: 'runs'});
    root.replaceChildren(
      h('div', {className: 'toolbar'}, this.newButton, h('button', {type: 'button', onclick: () => this.load(true)},
        'Refresh')),
      this.message, this.formHolder,
      h('div', {className: 'table-wrap'}, h('table', {className: 'schedules'},
        h('caption', {className: 'visually-hidden'}, 'Schedules of this server'),
        h('thead', {}, h('tr', {}, ...['Name', 'When', 'Tasks', 'Next run', 'Last run'].map(
          (label) => h('th', {scope: 'col'}, label)),
        h('th', {scope: 'col'}, h('span', {className: 'visually-hidden'}, 'Actions')))),
        this.table)),
      this.runsHolder);
  }

  attach(instance) {
    if (this.instance?.id !== instance.id) {
      this.loaded = false;
      this.editing = null;
      this.openRuns = null;
      fill(this.table);
      fill(this.formHolder);
      fill(this.runsHolder);
      say(this.message, '');
    }
    this.instance = instance;
  }

  detach() {
    this.instance = null;
    this.loaded = false;
  }

  base() {
    return `/api/instances/${this.instance.id}/schedules`;
  }

  async load(force = false) {
    if (!this.instance || (this.loaded && !force)) return;
    try {
      const {items} = await api.get(`${this.base()}?limit=100`);
      this.loaded = true;
      fill(this.table, items.map((s) => this.row(s)));
      if (!items.length && !this.editing) say(this.message, 'No schedules yet. A schedule runs tasks (a console '
        + 'command, a power action, a backup) at the times you choose.');
      if (this.openRuns) await this.showRuns(items.find((s) => s.id === this.openRuns.id) || this.openRuns, true);
    } catch (error) {
      say(this.message, `Schedules could not be loaded. ${describe(error)}`, 'error');
    }
  }

  row(schedule) {
    const last = schedule.last_run;
    const button = (label, handler, extra = {}) => h('button', {type: 'button', className: 'small',
      onclick: handler, ...extra}, label);
    return h('tr', {dataset: {id: schedule.id, enabled: String(schedule.enabled)}},
      h('th', {scope: 'row'}, schedule.name, schedule.enabled ? '' : h('span', {className: 'muted'}, ' (paused)')),
      h('td', {}, h('code', {}, schedule.cron), h('br'), h('small', {className: 'muted'}, schedule.timezone),
        schedule.only_when_running ? h('small', {className: 'muted'}, ' · only while running') : ''),
      h('td', {}, schedule.tasks.map(taskText).join(' → ')),
      h('td', {}, schedule.enabled ? time(schedule.next_run_at) : 'paused'),
      h('td', {className: last && ['failed', 'missed'].includes(last.status) ? 'bad' : ''},
        last ? `${RUN_STATUS[last.status] || last.status}` : '—', last ? h('br') : '',
        last ? h('small', {}, time(last.due_at)) : ''),
      h('td', {className: 'row-actions'},
        button('Run now', () => this.runNow(schedule), {'aria-label': `Run ${schedule.name} now`}),
        button(schedule.enabled ? 'Pause' : 'Resume', () => this.toggle(schedule),
          {'aria-label': `${schedule.enabled ? 'Pause' : 'Resume'} ${schedule.name}`}),
        button('Edit', () => this.openForm(schedule), {'aria-label': `Edit ${schedule.name}`}),
        button('Runs', () => this.showRuns(schedule), {'aria-label': `Runs of ${schedule.name}`}),
        button('Delete', () => this.remove(schedule), {className: 'small danger',
          'aria-label': `Delete ${schedule.name}`})));
  }

  // --- The form -------------------------------------------------------------------------------

  openForm(schedule) {
    this.editing = schedule;
    const isNew = !schedule.id;
    const field = (id, label, input, help) => h('div', {className: 'field'}, h('label', {for: id}, label), input,
      help ? h('small', {id: `${id}-help`}, help) : '');
    const uid = `sched-${Math.random().toString(36).slice(2, 8)}`;
    const name = h('input', {id: `${uid}-name`, required: true, maxlength: '100', value: schedule.name || ''});
    const cron = h('input', {id: `${uid}-cron`, required: true, maxlength: '100', spellcheck: 'false',
      value: schedule.cron || '0 4 * * *', 'aria-describedby': `${uid}-cron-help`});
    const zone = h('input', {id: `${uid}-zone`, required: true, maxlength: '64', list: `${uid}-zones`,
      value: schedule.timezone || localZone(), spellcheck: 'false'});
    const zones = h('datalist', {id: `${uid}-zones`}, ZONES.map((z) => h('option', {value: z})));
    const onlyRunning = h('input', {type: 'checkbox', id: `${uid}-only`, checked: Boolean(schedule.only_when_running)});
    const enabled = h('input', {type: 'checkbox', id: `${uid}-enabled`, checked: schedule.enabled !== false});
    const tasks = h('ol', {className: 'task-list'});
    const addTask = (task = {action: 'command', payload: '', delay_seconds: 0}) => tasks.append(this.taskRow(task));
    (schedule.tasks?.length ? schedule.tasks : [undefined]).forEach((t) => addTask(t));
    const error = h('p', {className: 'message', role: 'alert'});
    const form = h('form', {className: 'panel schedule-form', novalidate: true,
      'aria-label': isNew ? 'New schedule' : `Edit ${schedule.name}`},
    h('h3', {}, isNew ? 'New schedule' : `Edit “${schedule.name}”`),
    h('div', {className: 'fields'},
      field(`${uid}-name`, 'Name', name),
      field(`${uid}-cron`, 'Cron expression', cron, 'minute hour day month weekday, e.g. 0 4 * * * (04:00 daily)'
        + ' or @hourly'),
      field(`${uid}-zone`, 'Timezone', zone), zones),
    h('p', {className: 'checks'},
      h('label', {}, onlyRunning, ' Only while the server is running'),
      h('label', {}, enabled, ' Enabled')),
    h('h4', {}, 'Tasks, in order'), tasks,
    h('button', {type: 'button', className: 'small', onclick: () => addTask()}, 'Add task'),
    h('div', {className: 'buttons'},
      h('button', {type: 'submit', className: 'primary'}, isNew ? 'Create schedule' : 'Save schedule'),
      h('button', {type: 'button', onclick: () => this.closeForm()}, 'Cancel')),
    error);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const body = {name: name.value, cron: cron.value, timezone: zone.value.trim(),
        only_when_running: onlyRunning.checked, enabled: enabled.checked,
        tasks: [...tasks.children].map((li) => li.readTask())};
      say(error, isNew ? 'Creating…' : 'Saving…');
      try {
        if (isNew) await api.post(this.base(), {json: body});
        else await api.patch(`${this.base()}/${schedule.id}`, {json: body});
        this.closeForm();
        say(this.message, isNew ? 'Schedule created.' : 'Schedule saved.', 'ok');
        await this.load(true);
      } catch (exc) {
        say(error, describe(exc), 'error');
      }
    });
    form.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this.closeForm();
    });
    fill(this.formHolder, form);
    say(this.message, '');
    name.focus();
  }

  taskRow(task) {
    const uid = `task-${Math.random().toString(36).slice(2, 8)}`;
    const action = h('select', {id: `${uid}-action`}, Object.entries(ACTIONS).map(([value, label]) =>
      h('option', {value, selected: task.action === value}, label)));
    const command = h('input', {id: `${uid}-command`, maxlength: '1000', spellcheck: 'false',
      value: task.action === 'command' ? task.payload || '' : '', placeholder: 'say Restarting in 5 minutes'});
    const power = h('select', {id: `${uid}-power`}, POWER.map((p) => h('option', {value: p,
      selected: task.action === 'power' && task.payload === p}, p)));
    const delay = h('input', {id: `${uid}-delay`, type: 'number', min: '0', max: '900', step: '1',
      value: String(task.delay_seconds || 0)});
    const goOn = h('input', {type: 'checkbox', id: `${uid}-go-on`, checked: Boolean(task.continue_on_failure)});
    const commandField = h('span', {className: 'task-payload'}, h('label', {for: `${uid}-command`}, 'Command'),
      command);
    const powerField = h('span', {className: 'task-payload'}, h('label', {for: `${uid}-power`}, 'Power'), power);
    const li = h('li', {className: 'task-row'},
      h('label', {for: `${uid}-action`}, 'Action'), action, commandField, powerField,
      h('label', {for: `${uid}-delay`}, 'Wait before (s)'), delay,
      h('label', {}, goOn, ' Go on if it fails'),
      h('button', {type: 'button', className: 'small quiet', 'aria-label': 'Remove this task',
        onclick: () => li.remove()}, 'Remove'));
    const sync = () => {
      commandField.hidden = action.value !== 'command';
      powerField.hidden = action.value !== 'power';
    };
    action.addEventListener('change', sync);
    sync();
    li.readTask = () => ({action: action.value,
      payload: action.value === 'command' ? command.value : action.value === 'power' ? power.value : null,
      delay_seconds: Number.parseInt(delay.value || '0', 10), continue_on_failure: goOn.checked});
    return li;
  }

  closeForm() {
    this.editing = null;
    fill(this.formHolder);
    this.newButton.focus();
  }

  // --- Actions -----------------------------------------------------------------------------------

  async runNow(schedule) {
    say(this.message, `Starting “${schedule.name}”…`);
    try {
      await api.post(`${this.base()}/${schedule.id}/run`, {headers: {'Idempotency-Key': newKey()}});
      say(this.message, `“${schedule.name}” is running now. Its runs show each task's result.`, 'ok');
      await this.showRuns(schedule);
      this.followRuns(schedule);
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  async followRuns(schedule) {
    const instanceId = this.instance?.id;
    for (let i = 0; i < 40 && this.instance?.id === instanceId && this.openRuns?.id === schedule.id; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 750));
      if (this.instance?.id !== instanceId) return;
      const {items} = await api.get(`${this.base()}/${schedule.id}/runs?limit=1`);
      await this.load(true);
      if (items.length && !['pending', 'running'].includes(items[0].status)) return;
    }
  }

  async toggle(schedule) {
    try {
      await api.patch(`${this.base()}/${schedule.id}`, {json: {enabled: !schedule.enabled}});
      say(this.message, schedule.enabled ? `“${schedule.name}” is paused.` : `“${schedule.name}” is running on its `
        + 'schedule again.', 'ok');
      await this.load(true);
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  async remove(schedule) {
    const ok = await confirmAction(`Delete the schedule “${schedule.name}”? Its past runs stay in the activity log.`,
      'Delete schedule');
    if (!ok) return;
    try {
      await api.del(`${this.base()}/${schedule.id}`);
      if (this.openRuns?.id === schedule.id) {
        this.openRuns = null;
        fill(this.runsHolder);
      }
      await this.load(true);
      say(this.message, `“${schedule.name}” is deleted.`, 'ok');
    } catch (error) {
      say(this.message, describe(error), 'error');
    }
  }

  // --- Runs --------------------------------------------------------------------------------------

  async showRuns(schedule, refresh = false) {
    this.openRuns = schedule;
    try {
      const {items, next_cursor: next} = await api.get(`${this.base()}/${schedule.id}/runs?limit=20`);
      this.runsCursor = next;
      const list = h('ol', {className: 'run-list'}, items.map((run) => this.runItem(run)));
      const more = h('button', {type: 'button', className: 'small', hidden: !next, onclick: async () => {
        const page = await api.get(`${this.base()}/${schedule.id}/runs?limit=20&cursor=${encodeURIComponent(
          this.runsCursor)}`);
        list.append(...page.items.map((run) => this.runItem(run)));
        this.runsCursor = page.next_cursor;
        more.hidden = !page.next_cursor;
      }}, 'Older runs');
      fill(this.runsHolder, h('h3', {tabindex: '-1'}, `Runs of “${schedule.name}”`),
        items.length ? list : h('p', {className: 'muted'}, 'No runs yet.'), more);
      if (!refresh) this.runsHolder.querySelector('h3').focus();
    } catch (error) {
      fill(this.runsHolder, h('p', {className: 'message', dataset: {kind: 'error'}}, describe(error)));
    }
  }

  runItem(run) {
    const reason = run.reason ? ` — ${run.reason.message} (${run.reason.code})` : '';
    const trigger = run.trigger === 'manual' ? 'run now' : 'on schedule';
    return h('li', {className: 'run', dataset: {id: run.id, status: run.status}},
      h('p', {}, h('strong', {className: `run-status ${run.status}`}, RUN_STATUS[run.status] || run.status), ' · ',
        trigger, ' · due ', time(run.due_at), run.finished_at ? [' · ended ', time(run.finished_at)] : '', reason),
      run.status === 'missed' ? '' : h('ol', {className: 'run-tasks'}, run.tasks.map((task) =>
        h('li', {dataset: {status: task.status}}, `${taskText(task)}: ${TASK_STATUS[task.status] || task.status}`,
          task.error ? ` — ${task.error.message} (${task.error.code})` : ''))));
  }
}
