// The dashboard page of fastify-taskqueue: reads the JSON API beside it every few seconds and draws
// each queue. Every value is written as text (textContent, attributes), never as HTML: a task url or
// a dead letter's detail can hold anything its sender wrote.
'use strict'

;(function () {
  const api = document.body.dataset.api
  const queuesBox = document.getElementById('queues')
  const schedulesBox = document.getElementById('schedules')
  const updated = document.getElementById('updated')
  const messageBox = document.getElementById('message')
  // `?refresh=1000` refreshes faster (not under half a second); the default is every 3 seconds.
  const asked = Number(new URLSearchParams(window.location.search).get('refresh'))
  const refreshMs = asked >= 500 ? asked : 3000
  const listed = 20
  let timer
  let refreshing = false
  let again = false

  /** An element with its attributes and children; strings become text nodes. */
  function el (tag, attributes, ...children) {
    const node = document.createElement(tag)
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue
      if (name === 'onclick') node.addEventListener('click', value)
      else node.setAttribute(name, value === true ? '' : String(value))
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue
      node.append(typeof child === 'string' || typeof child === 'number' ? document.createTextNode(String(child)) : child)
    }
    return node
  }

  /** Calls the API; an answer that is not 2xx throws its coded message. */
  async function call (method, path) {
    const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin' }
    // Every action is JSON: the API refuses anything else (a cross-site form cannot send it).
    if (method !== 'GET') {
      init.headers['content-type'] = 'application/json'
      init.body = '{}'
    }
    const response = await fetch(api + path, init)
    const body = await response.json().catch(() => null)
    if (!response.ok) {
      const said = body && body.message ? `${body.code || response.status}: ${body.message}` : `HTTP ${response.status}`
      throw new Error(said)
    }
    return body
  }

  const queuePath = (queue) => `/queues/${encodeURIComponent(queue)}`

  function say (text, isError) {
    messageBox.textContent = text
    messageBox.hidden = text === ''
    messageBox.classList.toggle('error', Boolean(isError))
  }

  function age (ms) {
    if (ms === null || ms === undefined) return '–'
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`
    const seconds = ms / 1000
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`
    return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`
  }

  function when (ms) {
    if (!ms) return '–'
    return new Date(ms).toLocaleString()
  }

  /** Runs an action of a button, after a confirmation when it destroys something. */
  function action (label, question, work, done) {
    return async (event) => {
      if (question && !window.confirm(question)) return
      const button = event.currentTarget
      button.disabled = true
      try {
        say(done(await work()), false)
      } catch (error) {
        say(`${label} failed: ${error.message}`, true)
      }
      // A section whose content did not change is kept (see draw), with this very button.
      button.disabled = false
      await refresh()
    }
  }

  function figure (name, label, value) {
    return el('div', { class: 'figure', 'data-figure': name }, el('dt', {}, label), el('dd', {}, value))
  }

  function waitingTable (queue, tasks) {
    if (tasks.length === 0) return el('p', { class: 'empty' }, 'No task is waiting.')
    const now = Date.now()
    return el('table', { class: 'tasks waiting' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Id'), el('th', {}, 'Group'), el('th', {}, 'Method'), el('th', {}, 'Url'), el('th', {}, 'Age'), el('th', {}, ''))),
      el('tbody', {}, tasks.map((task) => el('tr', { 'data-id': task.id },
        el('td', { class: 'id' }, task.id),
        el('td', { class: 'group' }, task.group || '–'),
        el('td', {}, task.method),
        el('td', { class: 'url' }, task.url),
        el('td', { class: 'number', 'data-since': task.eta }, age(now - task.eta)),
        el('td', { class: 'row-action' }, el('button', {
          type: 'button',
          class: 'danger',
          onclick: action('Cancel', `Cancel task ${task.id}? It will never run.`,
            () => call('DELETE', `${queuePath(queue)}/tasks/${encodeURIComponent(task.id)}`),
            ({ cancelled }) => cancelled ? `Task ${task.id} cancelled.` : `Task ${task.id} was no longer waiting.`)
        }, 'Cancel'))
      ))))
  }

  function deadTable (queue, letters) {
    if (letters.length === 0) return el('p', { class: 'empty' }, 'No dead letter.')
    return el('table', { class: 'tasks dead' },
      el('thead', {}, el('tr', {}, ['Id', 'Group', 'Reason', 'Status', 'Detail', 'When', 'Url', ''].map((title) => el('th', {}, title)))),
      el('tbody', {}, letters.map((letter) => el('tr', { 'data-id': letter.id === null ? false : letter.id },
        el('td', { class: 'id' }, letter.id === null ? '(unreadable)' : letter.id),
        el('td', { class: 'group' }, (letter.task && letter.task.group) || '–'),
        el('td', {}, letter.reason),
        el('td', { class: 'number' }, letter.statusCode === undefined ? '–' : letter.statusCode),
        // With the detail, the start of the answer that killed the task, when the letter keeps it.
        el('td', { class: 'detail' }, letter.detail || '', letter.body ? el('div', { class: 'answer', title: letter.body }, letter.body) : null),
        el('td', {}, when(letter.at)),
        el('td', { class: 'url' }, letter.task ? `${letter.task.method} ${letter.task.url}` : '–'),
        el('td', { class: 'row-action' }, letter.id === null
          ? ''
          : el('button', {
            type: 'button',
            onclick: action('Requeue', null,
              () => call('POST', `${queuePath(queue)}/dead/requeue/${encodeURIComponent(letter.id)}`),
              ({ requeued }) => requeued > 0 ? `Task ${letter.id} requeued.` : `Task ${letter.id} was not requeued (a live task has its id, or it is gone).`)
          }, 'Requeue'))
      ))))
  }

  function queueSection (line, waiting, dead) {
    const { queue } = line
    const path = queuePath(queue)
    const heading = el('header', { class: 'queue-head' },
      el('h2', {}, queue),
      el('span', { class: 'badge' }, line.type),
      line.paused ? el('span', { class: 'badge paused' }, 'paused') : null,
      el('span', { class: 'spacer' }),
      line.error
        ? null
        : line.paused
          ? el('button', { type: 'button', onclick: action('Resume', null, () => call('POST', `${path}/resume`), () => `Queue ${queue} resumed.`) }, 'Resume')
          : el('button', { type: 'button', onclick: action('Pause', null, () => call('POST', `${path}/pause`), () => `Queue ${queue} paused: no new task starts.`) }, 'Pause'))
    if (line.error) {
      return el('section', { class: 'queue', 'data-queue': queue }, heading,
        el('p', { class: 'message error' }, `${line.error.code}: ${line.error.message}`))
    }
    return el('section', { class: 'queue', 'data-queue': queue },
      heading,
      el('dl', { class: 'figures' },
        figure('waiting', 'Waiting', line.waiting),
        figure('delayed', 'Delayed', line.delayed),
        figure('inFlight', 'In flight', line.inFlight),
        figure('dead', 'Dead', line.dead),
        figure('paused', 'Paused', line.paused ? 'yes' : 'no'),
        figure('oldestWaitingAge', 'Oldest waiting', age(line.oldestWaitingAge))),
      el('h3', {}, 'Waiting tasks', line.waiting > listed ? el('small', {}, ` (the first ${listed} of ${line.waiting})`) : null),
      waiting instanceof Error ? el('p', { class: 'message error' }, waiting.message) : waitingTable(queue, waiting),
      el('div', { class: 'subhead' },
        el('h3', {}, 'Dead letters', line.dead > listed ? el('small', {}, ` (the newest ${listed} of ${line.dead})`) : null),
        el('span', { class: 'spacer' }),
        el('button', {
          type: 'button',
          disabled: line.dead === 0,
          onclick: action('Requeue all', `Requeue every dead letter of ${queue}? They will run again.`,
            () => call('POST', `${path}/dead/requeue`), ({ requeued }) => `${requeued} dead letter(s) of ${queue} requeued.`)
        }, 'Requeue all'),
        el('button', {
          type: 'button',
          class: 'danger',
          disabled: line.dead === 0,
          onclick: action('Purge', `Purge the dead letters of ${queue}? They will be lost for good.`,
            () => call('DELETE', `${path}/dead`), ({ purged }) => `${purged} dead letter(s) of ${queue} purged.`)
        }, 'Purge')),
      dead instanceof Error ? el('p', { class: 'message error' }, dead.message) : deadTable(queue, dead))
  }

  /** What a section shows, but the ages that change at every refresh. */
  function keyOf ({ line, waiting, dead }) {
    const shown = (list) => list instanceof Error ? list.message : list
    return JSON.stringify([{ ...line, oldestWaitingAge: line.oldestWaitingAge === null }, shown(waiting), shown(dead)])
  }

  /**
   * Redraws only the sections whose content changed; in the others only the ages are updated. A
   * button replaced under the pointer between mouse down and up would never receive its click.
   */
  function draw (drawn) {
    const old = new Map([...queuesBox.querySelectorAll('section.queue')].map((section) => [section.dataset.queue, section]))
    const now = Date.now()
    const sections = drawn.map((content) => {
      const key = keyOf(content)
      const kept = old.get(content.line.queue)
      if (kept && kept.dataset.key === key) {
        for (const cell of kept.querySelectorAll('[data-since]')) cell.textContent = age(now - Number(cell.dataset.since))
        const oldest = kept.querySelector('[data-figure="oldestWaitingAge"] dd')
        if (oldest) oldest.textContent = age(content.line.oldestWaitingAge)
        return kept
      }
      const section = queueSection(content.line, content.waiting, content.dead)
      section.dataset.key = key
      return section
    })
    if (sections.length === 0) {
      queuesBox.replaceChildren(el('p', { class: 'empty' }, 'No queue is registered.'))
    } else if (sections.length !== queuesBox.children.length || sections.some((section, index) => queuesBox.children[index] !== section)) {
      queuesBox.replaceChildren(...sections)
    }
  }

  /** The schedules with their next run; redrawn only when they changed, hidden when there are none. */
  function drawSchedules (schedules) {
    const key = JSON.stringify(schedules)
    if (schedulesBox.dataset.key === key) return
    schedulesBox.dataset.key = key
    schedulesBox.hidden = schedules.length === 0
    schedulesBox.replaceChildren(
      el('h2', {}, 'Schedules'),
      el('table', { class: 'tasks schedule-list' },
        el('thead', {}, el('tr', {}, ['Name', 'Cron', 'Time zone', 'Queue', 'Next run'].map((title) => el('th', {}, title)))),
        el('tbody', {}, schedules.map((schedule) => el('tr', { 'data-schedule': schedule.name },
          el('td', { class: 'id' }, schedule.name),
          el('td', { class: 'cron' }, schedule.cron),
          el('td', {}, schedule.timezone),
          el('td', {}, schedule.queue),
          el('td', { class: 'next-run', title: schedule.nextRun || '' }, schedule.nextRun ? when(Date.parse(schedule.nextRun)) : '–'))))))
  }

  async function refresh () {
    // One refresh at a time: one asked for meanwhile (by a button) runs as soon as it ends.
    if (refreshing) {
      again = true
      return
    }
    refreshing = true
    clearTimeout(timer)
    try {
      const [lines, schedules] = await Promise.all([call('GET', '/queues'), call('GET', '/schedules')])
      const drawn = await Promise.all(lines.map(async (line) => {
        if (line.error) return { line, waiting: [], dead: [] }
        const path = queuePath(line.queue)
        const [waiting, dead] = await Promise.all([
          call('GET', `${path}/waiting?limit=${listed}`).catch((error) => error),
          call('GET', `${path}/dead?limit=${listed}`).catch((error) => error)
        ])
        return { line, waiting, dead }
      }))
      draw(drawn)
      drawSchedules(schedules)
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}, every ${refreshMs / 1000} s`
      updated.classList.remove('error')
    } catch (error) {
      updated.textContent = `Could not refresh: ${error.message}`
      updated.classList.add('error')
    } finally {
      refreshing = false
      if (again) {
        again = false
        refresh()
      } else {
        timer = setTimeout(refresh, refreshMs)
      }
    }
  }

  refresh()
})()
