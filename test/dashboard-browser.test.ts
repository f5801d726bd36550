// The dashboard page in a real browser (issue 13, "Tested in a real browser"): Debian's chromium,
// driven by playwright-core, on an app listening on 127.0.0.1. The page shows the queues and their
// figures, its buttons work end to end, and its screenshots are written to docs/screenshots/.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import tap, { test } from 'tap'
import { chromium, type Browser, type Locator, type Page } from 'playwright-core'
import { backendFor, queueTypes, sleep, waitFor, type QueueType, type Test } from './helpers/both-queues'
import { adminHeaders, dashboardApp, prefix, steers } from './helpers/dashboard'
import { listenLocal } from './helpers/harness'
import type { RecordingApp } from './helpers/app'

const screenshots = join(__dirname, '..', 'docs', 'screenshots')
let browser: Promise<Browser> | undefined

/** The browser of this file, started on first use. */
function launched (): Promise<Browser> {
  if (browser === undefined) {
    browser = chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: ['--no-sandbox'] })
    tap.teardown(async () => { await (await (browser as Promise<Browser>)).close() })
  }
  return browser
}

interface Dashboard extends RecordingApp {
  page: Page
  /** A queue's section of the page. */
  queue: (name: string) => Locator
  /** Errors the page met: uncaught exceptions and console errors (a CSP violation is one). */
  pageErrors: string[]
}

/**
 * An app with the queues `default` (consumed here) and `mail` (no consumer: its tasks wait), the
 * dashboard behind the admin's authentication, and a browser page on it that refreshes every half
 * second. Tasks named `fail` answer 400 on their first try (buried), then 200.
 */
async function open (t: Test, type: QueueType): Promise<Dashboard | null> {
  const backend = await backendFor(type)
  const recording = await dashboardApp(t, {
    queues: [backend.queue('default'), backend.queue('mail')],
    consumers: [{ queue: 'default' }],
    // Its ticks come once a year: it is shown, and adds nothing while the test runs.
    schedules: [{ name: 'new-year', cron: '0 0 1 1 *', url: '/tasks/new-year', queue: 'mail', timezone: 'Europe/Helsinki' }]
  }, {
    tasks: { fail: async (request, reply, tries) => tries === 0 ? await reply.code(400).send({ refused: 'the task was wrong' }) : { ok: true } }
  })
  if (!await steers(t, recording.app, type)) return null
  const port = await listenLocal(recording.app)
  const context = await (await launched()).newContext({ extraHTTPHeaders: adminHeaders, viewport: { width: 1200, height: 900 } })
  t.teardown(() => context.close())
  const page = await context.newPage()
  const pageErrors: string[] = []
  page.on('pageerror', (error) => pageErrors.push(error.message))
  page.on('console', (message) => { if (message.type() === 'error') pageErrors.push(message.text()) })
  // Every confirm() that the test did not expect fails it: each one is answered by the test.
  page.on('dialog', async (dialog) => {
    if (expectedDialogs.has(page)) return
    pageErrors.push(`unexpected dialog: ${dialog.message()}`)
    await dialog.dismiss()
  })
  await page.goto(`http://127.0.0.1:${port}${prefix}?refresh=500`)
  await page.locator('section.queue').first().waitFor()
  return { ...recording, page, pageErrors, queue: (name) => page.locator(`section[data-queue="${name}"]`) }
}

const expectedDialogs = new Set<Page>()

/** Clicks a button whose action asks for a confirmation, answering it; resolves to its question. */
async function clickConfirming (page: Page, button: Locator, accept: boolean): Promise<string> {
  expectedDialogs.add(page)
  try {
    // The click resolves only once the dialog is answered: it is awaited after.
    const dialogShown = page.waitForEvent('dialog')
    const clicked = button.click()
    const dialog = await dialogShown
    const question = dialog.message()
    await (accept ? dialog.accept() : dialog.dismiss())
    await clicked
    return question
  } finally {
    expectedDialogs.delete(page)
  }
}

/** Waits until a figure of a queue's section reads `value`. */
async function figure (section: Locator, name: string, value: string): Promise<void> {
  await section.locator(`[data-figure="${name}"] dd`).filter({ hasText: new RegExp(`^${value}$`) }).waitFor({ timeout: 10_000 })
}

function row (section: Locator, table: 'waiting' | 'dead', id: string): Locator {
  return section.locator(`table.${table} tr[data-id="${id}"]`)
}

for (const type of queueTypes) {
  test(`${type}: issue 13: the page shows every queue with its figures, waiting tasks and dead letters, escaped and masked`, async (t) => {
    const dashboard = await open(t, type)
    if (dashboard === null) return
    const { app, page, queue } = dashboard
    const waiting = [
      await app.taskqueue.add('/tasks/welcome?token=secret-token&user=42', { queue: 'mail', method: 'POST', headers: { cookie: 'sid=secret-cookie' } }),
      await app.taskqueue.add('/tasks/show?q=<img/src=x/onerror=alert(1)>', { queue: 'mail' }),
      await app.taskqueue.add('/tasks/report', { queue: 'mail', id: 'monthly-report', group: 'tenant-7' })
    ]
    await app.taskqueue.add('/tasks/later', { queue: 'mail', delay: 3_600_000 })
    const dead = await app.taskqueue.add('/tasks/fail?password=secret-password', { method: 'PUT' })
    await waitFor('the failing task to die', async () => (await app.taskqueue.queue('default').dead()).length === 1, 10_000)

    const mail = queue('mail')
    await figure(mail, 'waiting', '3')
    await figure(mail, 'delayed', '1')
    await figure(mail, 'inFlight', '0')
    await figure(mail, 'dead', '0')
    await figure(mail, 'paused', 'no')
    t.match(await mail.locator('.badge').first().textContent(), type, 'the queue type is shown')
    for (const id of waiting) await row(mail, 'waiting', id).waitFor()
    t.same(await mail.locator('table.waiting tbody tr').evaluateAll((rows) => rows.map((tr) => tr.getAttribute('data-id'))), waiting, 'the waiting tasks, next to run first')
    const cells = await row(mail, 'waiting', waiting[0]).locator('td').allTextContents()
    t.match(cells, [waiting[0], '–', 'POST', '/tasks/welcome?token=[masked]&user=42', /^\d+(\.\d)? (ms|s)$/, 'Cancel'], 'id, group, method, url, age')
    t.equal(cells.length, 6)
    t.equal(await row(mail, 'waiting', 'monthly-report').locator('td.group').textContent(), 'tenant-7', 'the group of a task (issue 14)')
    t.equal(await row(mail, 'waiting', waiting[1]).locator('td.url').textContent(), '/tasks/show?q=<img/src=x/onerror=alert(1)>', 'a url is shown as text')
    t.equal(await page.locator('main img').count(), 0, 'never as HTML')

    const defaultQueue = queue('default')
    await figure(defaultQueue, 'dead', '1')
    await row(defaultQueue, 'dead', dead).waitFor()
    const deadCells = await row(defaultQueue, 'dead', dead).locator('td').allTextContents()
    t.match(deadCells, [dead, '–', 'final status', '400', /400/, /\d/, 'PUT /tasks/fail?password=[masked]', 'Requeue'], 'id, reason, status, detail, when and url')
    t.notMatch(await page.content(), /secret/, 'no credential reaches the page')
    for (const label of ['Pause', 'Requeue all', 'Purge']) t.equal(await defaultQueue.getByRole('button', { name: label, exact: true }).count(), 1, `a ${label} button`)

    // Issue 14: the schedules, with their next run.
    const schedule = page.locator('#schedules tr[data-schedule="new-year"]')
    await schedule.waitFor()
    const scheduleCells = await schedule.locator('td').allTextContents()
    t.match(scheduleCells, ['new-year', '0 0 1 1 *', 'Europe/Helsinki', 'mail', /\d/], 'name, cron, time zone, queue and next run')
    const nextRun = app.taskqueue.schedules()[0].nextRun as Date
    t.equal(await schedule.locator('td.next-run').getAttribute('title'), nextRun.toISOString(), 'the next run, as schedules() tells it')

    mkdirSync(screenshots, { recursive: true })
    await page.screenshot({ path: join(screenshots, `dashboard-${type}.png`), fullPage: true })
    t.same(dashboard.pageErrors, [], 'the page met no error (nor a Content-Security-Policy violation)')
  })

  test(`${type}: issue 13: Requeue runs a dead letter again; Pause stops the dispatch until Resume`, async (t) => {
    const dashboard = await open(t, type)
    if (dashboard === null) return
    const { app, queue, finished, runs, page } = dashboard
    const section = queue('default')
    const dead = await app.taskqueue.add('/tasks/fail')
    await row(section, 'dead', dead).waitFor({ timeout: 10_000 })
    await row(section, 'dead', dead).getByRole('button', { name: 'Requeue', exact: true }).click()
    await waitFor('the requeued task to run', () => finished.filter((run) => run.id === dead).length === 2, 10_000)
    await row(section, 'dead', dead).waitFor({ state: 'detached', timeout: 10_000 })
    await page.locator('#message', { hasText: `Task ${dead} requeued.` }).waitFor()
    t.equal(runs.filter((run) => run.id === dead).length, 2, 'the dead letter ran again, once')

    await section.getByRole('button', { name: 'Pause', exact: true }).click()
    await section.locator('.badge.paused').waitFor()
    await figure(section, 'paused', 'yes')
    t.equal(await app.taskqueue.queue('default').isPaused(), true, 'the queue is paused')
    const held = await app.taskqueue.add('/tasks/held')
    await row(section, 'waiting', held).waitFor({ timeout: 10_000 })
    await figure(section, 'waiting', '1')
    // Not a timing assertion: a paused queue must start nothing, however long we look.
    await sleep(300)
    t.notOk(runs.some((run) => run.id === held), 'a paused queue starts no task')
    await section.getByRole('button', { name: 'Resume', exact: true }).click()
    await waitFor('the held task to run once resumed', () => finished.some((run) => run.id === held), 10_000)
    await section.locator('.badge.paused').waitFor({ state: 'detached' })
    await section.getByRole('button', { name: 'Pause', exact: true }).waitFor()
    t.same(dashboard.pageErrors, [])
  })

  test(`${type}: issue 13: Cancel, Requeue all and Purge ask first, and do nothing when the answer is no`, async (t) => {
    const dashboard = await open(t, type)
    if (dashboard === null) return
    const { app, queue, page, finished } = dashboard
    const mail = queue('mail')
    const task = await app.taskqueue.add('/tasks/newsletter', { queue: 'mail' })
    const cancel = row(mail, 'waiting', task).getByRole('button', { name: 'Cancel', exact: true })
    t.equal(await clickConfirming(page, cancel, false), `Cancel task ${task}? It will never run.`)
    t.match(await app.taskqueue.queue('mail').get(task), { state: 'waiting' }, 'a dismissed Cancel leaves the task waiting')
    t.equal(await clickConfirming(page, cancel, true), `Cancel task ${task}? It will never run.`)
    await row(mail, 'waiting', task).waitFor({ state: 'detached', timeout: 10_000 })
    t.equal(await app.taskqueue.queue('mail').get(task), null, 'the cancelled task is gone')
    await mail.locator('p.empty', { hasText: 'No task is waiting.' }).waitFor()

    const section = queue('default')
    const dead = [await app.taskqueue.add('/tasks/fail'), await app.taskqueue.add('/tasks/fail')]
    await figure(section, 'dead', '2')
    const requeueAll = section.getByRole('button', { name: 'Requeue all', exact: true })
    t.equal(await clickConfirming(page, requeueAll, false), 'Requeue every dead letter of default? They will run again.')
    t.equal((await app.taskqueue.queue('default').dead()).length, 2, 'a dismissed Requeue all requeues nothing')
    await clickConfirming(page, requeueAll, true)
    await waitFor('both requeued tasks to run', () => dead.every((id) => finished.filter((run) => run.id === id).length === 2), 10_000)
    await figure(section, 'dead', '0')

    await app.taskqueue.add('/tasks/fail')
    await figure(section, 'dead', '1')
    const purge = section.getByRole('button', { name: 'Purge', exact: true })
    t.equal(await clickConfirming(page, purge, false), 'Purge the dead letters of default? They will be lost for good.')
    t.equal((await app.taskqueue.queue('default').dead()).length, 1, 'a dismissed Purge keeps the dead letters')
    await clickConfirming(page, purge, true)
    await section.locator('p.empty', { hasText: 'No dead letter.' }).waitFor({ timeout: 10_000 })
    t.same(await app.taskqueue.queue('default').dead(), [], 'Purge emptied the dead letters')
    // A periodic refresh on its way when Purge was clicked may read the figures before the purge
    // and the list after it: the page then shows the empty list with the old count for one refresh,
    // and the refresh the click asked for follows at once.
    await section.locator('button.danger:disabled', { hasText: 'Purge' }).waitFor({ timeout: 10_000 }).catch(() => {})
    t.equal(await purge.isDisabled(), true, 'with nothing to purge, Purge is disabled')
    t.same(dashboard.pageErrors, [])
  })
}

test('issue 13: the page says so when the API fails, and shows the queues again once it answers', async (t) => {
  const dashboard = await open(t, 'local')
  if (dashboard === null) return
  const { page } = dashboard
  // The admin loses access (a session that expired): every call now answers the app's 401.
  await page.context().setExtraHTTPHeaders({})
  await page.locator('#updated.error', { hasText: 'Could not refresh: APP_UNAUTHORIZED: admins only' }).waitFor({ timeout: 10_000 })
  await page.context().setExtraHTTPHeaders(adminHeaders)
  await page.locator('#updated:not(.error)', { hasText: /^Updated / }).waitFor({ timeout: 10_000 })
  t.equal(await page.locator('section.queue').count(), 2, 'both queues are shown again')
  t.ok(dashboard.pageErrors.every((error) => error.includes('401')), 'the only errors the page met are the refused calls')
})
