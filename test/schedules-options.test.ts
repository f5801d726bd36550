// The `schedules` option of issue 14 refused at register(): every kind of bad schedule fails with
// FST_TASKQUEUE_INVALID_OPTION, naming the schedule by its place and name and the field at fault.
import { test } from 'tap'
import Fastify from 'fastify'
import taskqueue from '../plugin'
import type { TaskQueuePluginOptions } from '../lib/options'
import type { TaskQueueService } from '../lib/taskqueue'

const good = { name: 'nightly', cron: '0 3 * * *', url: '/tasks/night' }

async function startError (options: unknown): Promise<(Error & { code?: string }) | undefined> {
  const app = Fastify()
  app.register(taskqueue, options as TaskQueuePluginOptions)
  const error = await app.ready().then(() => undefined, (error: Error) => error)
  await app.close().catch(() => {})
  return error
}

const refused: Array<[string, Record<string, unknown>, string, RegExp?]> = [
  ['a cron of bad syntax', { cron: '0 3 * * ' + 'x' }, 'schedules[1] ("nightly").cron'],
  ['a cron of four fields', { cron: '0 3 * *' }, 'schedules[1] ("nightly").cron', /not five cron fields/],
  ['a cron of seven fields (years)', { cron: '0 0 3 * * * 2030' }, 'schedules[1] ("nightly").cron', /not five cron fields/],
  ['an ISO date, which croner runs once', { cron: '2030-01-01T00:00:00' }, 'schedules[1] ("nightly").cron', /not five cron fields/],
  ['a value out of range', { cron: '61 * * * *' }, 'schedules[1] ("nightly").cron', /minute/],
  ['a cron that never matches', { cron: '0 0 30 2 *' }, 'schedules[1] ("nightly").cron', /never matches/],
  ['an empty cron', { cron: '' }, 'schedules[1] ("nightly").cron'],
  ['a time zone that is not IANA', { timezone: 'Mars/Olympus' }, 'schedules[1] ("nightly").timezone', /IANA/],
  ['a duplicate name', { name: 'first' }, 'schedules[1] ("first").name', /another schedule/],
  ['an unknown queue', { queue: 'nowhere' }, 'schedules[1] ("nightly").queue', /no queue "nowhere"/],
  ['a name with a space', { name: 'night ly' }, 'schedules[1] ("night ly").name'],
  ['no url', { url: undefined }, 'schedules[1] ("nightly").url'],
  ['a url that is not a path of the app', { url: 'https://example.com/x' }, 'schedules[1] ("nightly").url', /not a path of this app/],
  ['a query string and params', { url: '/tasks/night?a=1', params: { b: 2 } }, 'schedules[1] ("nightly").url'],
  ['an x-task-* header', { headers: { 'x-task-id': 'mine' } }, 'schedules[1] ("nightly").headers', /x-task-\*/],
  ['a header value with a line break', { headers: { 'x-a': 'a\nb' } }, 'schedules[1] ("nightly").headers'],
  ['a method tasks do not use', { method: 'HEAD' }, 'schedules[1] ("nightly").method'],
  ['a payload with no JSON form', { payload: { n: 1n } }, 'schedules[1] ("nightly").payload'],
  ['an unknown key', { every: '5m' }, 'schedules[1] ("nightly")'],
  ['no name', { name: undefined }, 'schedules[1].name']
]

for (const [what, change, path, detail] of refused) {
  test(`schedules: ${what} fails register()`, async (t) => {
    const error = await startError({ schedules: [{ ...good, name: 'first' }, { ...good, ...change }] })
    t.equal(error?.code, 'FST_TASKQUEUE_INVALID_OPTION', 'coded as an invalid option')
    t.ok(error?.message.startsWith(`Invalid taskqueue option: ${path}`), `names ${path}: ${error?.message}`)
    if (detail !== undefined) t.match(error?.message, detail)
  })
}

test('schedules: five fields, six with seconds, a nickname and a time zone are taken', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, {
    queues: [{ queue: 'b' }, { queue: 'a' }],
    schedules: [
      { ...good },
      { name: 'seconds', cron: '*/10 * * * * *', url: '/tasks/s', queue: 'b' },
      { name: 'daily', cron: '@daily', url: '/tasks/d', timezone: 'America/New_York' }
    ]
  })
  await app.ready()
  t.same(app.taskqueue.schedules().map(({ name, queue, timezone }) => ({ name, queue, timezone })), [
    { name: 'nightly', queue: 'a', timezone: 'UTC' },
    { name: 'seconds', queue: 'b', timezone: 'UTC' },
    { name: 'daily', queue: 'a', timezone: 'America/New_York' }
  ], 'the default queue is the alphabetically first; the default time zone UTC')
  t.same(app.taskqueue.schedules().map(({ nextRun }) => nextRun instanceof Date), [true, true, true])
})

test('schedules: before ready, schedules() tells the next run from now; addTick knows only its schedules', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue, { schedules: [{ ...good, cron: '0 0 1 1 *' }] })
  const [listed] = app.taskqueue.schedules()
  t.equal(listed.nextRun?.toISOString(), `${new Date().getUTCFullYear() + 1}-01-01T00:00:00.000Z`, 'the next new year, though no timer runs yet')
  const scheduler = (app.taskqueue as TaskQueueService).scheduler
  await t.rejects(scheduler.addTick('unknown', Date.now()), /no schedule named "unknown"/)
})

test('schedules: an app without schedules lists none', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(taskqueue)
  t.same(app.taskqueue.schedules(), [])
})
