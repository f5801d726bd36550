// The checks of the `schedules` option that its schema cannot make: a cron expression and a time
// zone that croner reads, names that tell the schedules apart, and queues that are registered.
// Each failure names the schedule by its place and its name: `schedules[1] ("nightly").cron: ...`.
import { Cron } from 'croner'
import { InvalidOptionError } from '../errors'

/** What the checks read of a schedule (lib/options.ts holds its schema). */
export interface ScheduleShape {
  name: string
  cron: string
  timezone: string
  queue: string
}

/**
 * The cron fields croner should read: five, or six with seconds first, or a nickname such as
 * `@daily`. Croner also takes seven fields (years) and an ISO date (a single run), which are not
 * cron as users know it.
 */
function fieldCount (cron: string): boolean {
  const fields = cron.trim().split(/\s+/)
  return fields.length === 5 || fields.length === 6 || /^@[a-z]+$/i.test(cron.trim())
}

/** The parsed expression of a schedule, read in its time zone. Throws croner's own error. */
export function parseCron (schedule: Pick<ScheduleShape, 'cron' | 'timezone'>): Cron {
  return new Cron(schedule.cron, { timezone: schedule.timezone, mode: '5-or-6-parts' })
}

/** `schedules[1]` becomes `schedules[1] ("nightly")` when that schedule has a name to show. */
export function scheduleLabel (path: string, input: unknown): string {
  const match = /^schedules\[(\d+)\]/.exec(path)
  if (match === null) return path
  const name = (input as { schedules?: Array<{ name?: unknown }> })?.schedules?.[Number(match[1])]?.name
  return typeof name === 'string' ? path.replace(match[0], `${match[0]} (${JSON.stringify(name)})`) : path
}

/** Throws FST_TASKQUEUE_INVALID_OPTION for the first schedule that cannot run as written. */
export function checkSchedules (schedules: readonly ScheduleShape[], queueNames: ReadonlySet<string>): void {
  const seen = new Set<string>()
  schedules.forEach((schedule, index) => {
    const where = `schedules[${index}] (${JSON.stringify(schedule.name)})`
    if (seen.has(schedule.name)) throw new InvalidOptionError(`${where}.name: another schedule has this name; each needs its own, as its ticks are recorded by name`)
    seen.add(schedule.name)
    if (!queueNames.has(schedule.queue)) {
      throw new InvalidOptionError(`${where}.queue: no queue "${schedule.queue}" is registered; registered queues: ${[...queueNames].join(', ')}`)
    }
    try {
      // The time zone first: croner takes an unknown zone and fails only when it computes a run.
      Intl.DateTimeFormat('en-US', { timeZone: schedule.timezone })
    } catch {
      throw new InvalidOptionError(`${where}.timezone: ${JSON.stringify(schedule.timezone)} is not an IANA time zone name (such as UTC or Europe/Helsinki)`)
    }
    if (!fieldCount(schedule.cron)) {
      throw new InvalidOptionError(`${where}.cron: ${JSON.stringify(schedule.cron)} is not five cron fields (minute hour day month weekday), or six with seconds first`)
    }
    let cron: Cron
    try {
      cron = parseCron(schedule)
    } catch (error) {
      throw new InvalidOptionError(`${where}.cron: ${(error as Error).message}`)
    }
    if (cron.nextRun() === null) throw new InvalidOptionError(`${where}.cron: ${JSON.stringify(schedule.cron)} never matches a date`)
  })
}
