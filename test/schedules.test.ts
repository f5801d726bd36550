// Schedules of issue 14, on both queue types: a task added at every tick of a cron expression,
// with only the schedule's headers and payload, whose route sees the schedule and the tick; each
// tick added once (once per process on a local queue; once across every instance on Redis, even
// for an instance that ticks after the tick's task ran); schedules() with the next run; ticks stop
// at close. Time is fake on a local queue and real on Redis (the server's clock is real).
import { test } from 'tap'
import FakeTimers from '@sinonjs/fake-timers'
import type { FastifyInstance } from 'fastify'
import { backendFor, queueTypes, sleep, waitFor, type Backend, type Test } from './helpers/both-queues'
import { recordingApp, type RecordingApp } from './helpers/app'
import { clockFor, fakeClock } from './helpers/clock'
import type { TaskQueueService } from '../lib/taskqueue'
import type { ScheduleOptions } from '../lib/options'

const everySecond: ScheduleOptions = {
  name: 'every-second',
  cron: '* * * * * *',
  url: '/tasks/tick',
  method: 'POST',
  headers: { 'x-own': 'yes' },
  payload: { job: 'tick' }
}

/** The scheduler of an app: what a test calls to play an instance whose timer fires late. */
function schedulerOf (app: FastifyInstance): TaskQueueService['scheduler'] {
  return (app.taskqueue as TaskQueueService).scheduler
}

function start (t: Test, backend: Backend, schedules: ScheduleOptions[], consumer = true): Promise<RecordingApp> {
  return recordingApp(t, {
    queues: [backend.queue()],
    consumers: consumer ? [{ queue: 'default', concurrentLimit: 4 }] : [],
    schedules
  })
}

/** Whole seconds from the epoch in ms: the ticks of an every-second cron. */
const wholeSecond = (ms: number): boolean => ms % 1000 === 0

for (const type of queueTypes) {
  test(`${type}: every tick adds one task, with the schedule's headers and payload only; the route sees schedule and tick`, async (t) => {
    const clock = clockFor(t, type)
    const harness = await start(t, await backendFor(type), [everySecond])
    await clock.pass(3200)
    await waitFor('three ticks to run', () => harness.runs.length >= 3, 5000)
    const ids = harness.runs.map(({ id }) => id)
    t.equal(new Set(ids).size, ids.length, `each tick ran once: ${ids.join(', ')}`)
    for (const run of harness.runs) {
      const tick = run.task?.schedule?.tick as Date
      t.ok(tick instanceof Date && wholeSecond(tick.getTime()), 'request.taskqueue.task.schedule.tick is the tick, a Date')
      t.equal(run.task?.schedule?.name, 'every-second', 'request.taskqueue.task.schedule.name is the schedule')
      t.equal(run.id, `schedule:every-second:${tick.toISOString()}`, 'the task id is schedule:<name>:<tick ISO>')
      t.equal(run.headers['x-task-schedule'], 'every-second', 'x-task-schedule names the schedule')
      t.equal(run.headers['x-task-tick'], tick.toISOString(), 'x-task-tick is the tick, ISO 8601')
      t.equal(run.eta, tick.toISOString(), 'the try was due at the tick')
      t.same(run.body, { job: 'tick' }, 'the payload of the schedule')
      t.equal(run.headers['x-own'], 'yes', 'the headers of the schedule')
      t.equal(run.headers.cookie, undefined, 'nothing inherited')
    }
    const ticks = harness.runs.map(({ task }) => (task?.schedule?.tick as Date).getTime()).sort()
    for (let index = 1; index < ticks.length; index++) t.equal(ticks[index] - ticks[index - 1], 1000, 'one task per second, none skipped')
  })

  test(`${type}: schedules() lists each schedule with its next run; nextRun is null once closed`, async (t) => {
    const clock = clockFor(t, type)
    const nightly: ScheduleOptions = { name: 'nightly', cron: '30 3 * * *', url: '/tasks/night', timezone: 'Europe/Helsinki' }
    const harness = await start(t, await backendFor(type), [everySecond, nightly])
    const [second, night] = harness.app.taskqueue.schedules()
    t.match(second, { name: 'every-second', cron: '* * * * * *', timezone: 'UTC', queue: 'default' })
    t.ok(second.nextRun instanceof Date && second.nextRun.getTime() > Date.now() - 5 && second.nextRun.getTime() <= Date.now() + 1000, 'the next second')
    t.match(night, { name: 'nightly', cron: '30 3 * * *', timezone: 'Europe/Helsinki', queue: 'default' })
    const helsinki = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Helsinki', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
    t.equal(helsinki.format(night.nextRun as Date), '03:30', 'read in its time zone')
    t.ok((night.nextRun as Date).getTime() - Date.now() <= 24 * 3600_000, 'within a day')
    const before = second.nextRun as Date
    await clock.pass(1100)
    t.ok((harness.app.taskqueue.schedules()[0].nextRun as Date) > before, 'nextRun moves on after a tick')
    await harness.app.close()
    t.same(harness.app.taskqueue.schedules().map(({ nextRun }) => nextRun), [null, null], 'null once the app closed')
  })

  test(`${type}: close stops ticking and leaves no timer`, async (t) => {
    const clock = clockFor(t, type)
    const backend = await backendFor(type)
    const harness = await start(t, backend, [everySecond])
    await clock.pass(1100)
    await waitFor('a tick to run', () => harness.runs.length >= 1, 3000)
    await harness.app.close()
    const ran = harness.runs.length
    await clock.pass(2500)
    t.equal(harness.runs.length, ran, 'no task ran after close')
    if (type === 'redis') t.equal(await backend.redis().llen(backend.key('waiting')), 0, 'and none was added')
  })

  test(`${type}: an instance that ticks late, after the tick's task ran, adds nothing`, async (t) => {
    const backend = await backendFor(type)
    // A cron whose timer does not fire during the test: the ticks are played by calling addTick.
    const yearly: ScheduleOptions = { name: 'yearly', cron: '0 0 1 1 *', url: '/tasks/year' }
    const first = await start(t, backend, [yearly])
    const tick = Date.UTC(2026, 0, 1)
    t.equal(await schedulerOf(first.app).addTick('yearly', tick), true, 'the first instance adds the tick')
    const id = `schedule:yearly:${new Date(tick).toISOString()}`
    await waitFor('the tick to run', () => first.finished.length === 1)
    t.equal(first.runs[0].id, id)
    await waitFor('the task to be done', async () => await first.app.taskqueue.queue('default').get(id) === null)
    t.equal(await schedulerOf(first.app).addTick('yearly', tick), false, 'the same instance does not add it again')

    const late = await start(t, backend, [yearly], false)
    const lateAdds = await schedulerOf(late.app).addTick('yearly', tick)
    if (type === 'redis') {
      t.equal(lateAdds, false, 'a late instance of the same Redis queue does not add a tick whose task ran and is gone')
      t.equal(await schedulerOf(late.app).addTick('yearly', tick - 1000), false, 'nor an earlier tick')
      t.equal(await backend.redis().hget(backend.key('schedules'), 'yearly'), String(tick), 'the queue records the last tick')
      t.equal(await schedulerOf(late.app).addTick('yearly', tick + 1000), true, 'a later tick is added')
      await waitFor('the later tick to run', () => first.runs.length === 2)
      await sleep(200)
      t.same(first.runs.map((run) => run.id), [id, `schedule:yearly:${new Date(tick + 1000).toISOString()}`], 'each tick ran once')
    } else {
      t.equal(lateAdds, true, 'a local queue is once per process: another app adds its own')
    }
  })
}

test('local: a process held up past several ticks adds only the latest, never a backlog', async (t) => {
  const clock = FakeTimers.install({ now: Date.UTC(2026, 11, 2, 12, 0, 0, 200), toFake: ['setTimeout', 'clearTimeout', 'Date'], shouldAdvanceTime: true, advanceTimeDelta: 5 })
  t.teardown(() => clock.uninstall())
  const harness = await start(t, await backendFor('local'), [everySecond])
  // The clock jumps ten seconds with no timer firing (a blocked event loop), then the timer fires.
  clock.setSystemTime(Date.now() + 10_000)
  await clock.tickAsync(1000)
  await waitFor('the tick to run', () => harness.runs.length === 1)
  await sleep(50)
  t.equal(harness.runs.length, 1, 'one task, not one per missed tick')
  const tick = (harness.runs[0].task?.schedule?.tick as Date).getTime()
  t.ok(Date.now() - tick < 1000 && wholeSecond(tick), `the latest tick due: ${new Date(tick).toISOString()}`)
})

test('local: a tick further away than the longest timer is waited for in steps, and added once', async (t) => {
  const clock = FakeTimers.install({ now: Date.UTC(2026, 11, 2), toFake: ['setTimeout', 'clearTimeout', 'Date'] })
  t.teardown(() => clock.uninstall())
  const yearly: ScheduleOptions = { name: 'new-year', cron: '0 0 1 1 *', url: '/tasks/year' }
  const harness = await start(t, await backendFor('local'), [yearly])
  const newYear = Date.UTC(2027, 0, 1)
  t.equal(harness.app.taskqueue.schedules()[0].nextRun?.getTime(), newYear, 'next run: new year, 30 days ahead')
  const delays = (): number[] => [...(clock as unknown as { timers: Map<number, { callAt: number }> }).timers.values()].map(({ callAt }) => callAt - clock.now)
  // Node (and the fake clock) would fire a longer wait after 1 ms: the scheduler waits the longest it may.
  t.ok(delays().includes(2 ** 31 - 1), `the schedule's timer waits 2^31-1 ms, the longest a timer may: ${delays().join(', ')}`)
  await clock.tickAsync(2 ** 31 - 1)
  t.equal(harness.runs.length, 0, 'nothing added when the first step ends')
  await clock.tickAsync(newYear - clock.now - 1)
  t.equal(harness.runs.length, 0, 'nothing before the tick')
  await clock.tickAsync(1)
  await waitFor('the new year task', async () => {
    await clock.tickAsync(1)
    return harness.runs.length === 1
  })
  t.equal(harness.runs[0].id, 'schedule:new-year:2027-01-01T00:00:00.000Z')
})

test('local: a failed add is logged with its code, and the schedule goes on with its next tick', async (t) => {
  const clock = fakeClock(t)
  const harness = await start(t, await backendFor('local'), [everySecond])
  const queue = harness.app.taskqueue.queue('default')
  const backend = (harness.app.taskqueue as unknown as { backends: Map<string, { put: (tasks: unknown[]) => Promise<void> }> }).backends.get('default')
  if (backend === undefined) throw new Error('no backend')
  const put = backend.put
  let failures = 1
  backend.put = async function (tasks) {
    if (failures-- > 0) throw new Error('the backend is down')
    return await put.call(this, tasks)
  }
  await clock.pass(1000)
  await waitFor('the failure to be logged', () => harness.lines.some(({ err }) => (err as { code?: string } | undefined)?.code === 'FST_TASKQUEUE_SCHEDULE_FAILED'))
  const line = harness.lines.find(({ err }) => (err as { code?: string } | undefined)?.code === 'FST_TASKQUEUE_SCHEDULE_FAILED')
  t.match(line, { level: 50, schedule: 'every-second', queue: 'default' }, 'an error line naming the schedule and queue')
  t.match((line?.err as { message: string }).message, /Schedule "every-second": the task of its tick .* could not be added to queue "default": the backend is down/)
  await clock.pass(1000)
  await waitFor('the next tick to run', () => harness.runs.length === 1)
  t.equal(await queue.length(), 0)
})
