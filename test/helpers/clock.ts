// Time for the tests whose subject is time (delays, retries, timeouts, close deadlines) on a local
// queue: a fake clock that the test moves on at once instead of sleeping. Only setTimeout,
// clearTimeout and Date are faked: inject() runs on setImmediate and process.nextTick, which stay
// real, and so do the waits of the helpers (they keep the real timers). A Redis queue keeps real
// time, since the server's clock is real: there the same calls sleep.
import FakeTimers from '@sinonjs/fake-timers'
import { sleep, type Test } from './harness'

export interface TestClock {
  /** Whether time is fake (local queue) or real (Redis). */
  fake: boolean
  /** Lets `ms` of time pass: at once on a fake clock, firing the timers due on the way. */
  pass: (ms: number) => Promise<void>
  /** Lets time pass until Date.now() is `at` (nothing when it is already past). */
  passUntil: (at: number) => Promise<void>
  /** Skips `ms` ahead on a fake clock; nothing on real time, where the waits that follow take it. */
  skip: (ms: number) => Promise<void>
}

/** A wait on the timers of the code under test (fake while a fake clock is installed), for a handler. */
export function timer (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/**
 * Installs a fake clock for the rest of test `t`; call it before the app is built, so that the
 * clock is uninstalled after the app closed. The fake time also flows with real time, so that a
 * wait the test does not skip (closing the app, a bounded wait) still ends.
 */
export function fakeClock (t: Test): TestClock {
  const clock = FakeTimers.install({ now: Date.now(), toFake: ['setTimeout', 'clearTimeout', 'Date'], shouldAdvanceTime: true, advanceTimeDelta: 5 })
  t.teardown(() => clock.uninstall())
  const pass = async (ms: number): Promise<void> => { await clock.tickAsync(Math.max(0, ms)) }
  return { fake: true, pass, passUntil: (at) => pass(at - Date.now()), skip: pass }
}

export const realClock: TestClock = {
  fake: false,
  pass: (ms) => sleep(Math.max(0, ms)),
  passUntil: (at) => sleep(Math.max(0, at - Date.now())),
  skip: async () => {}
}

/** A fake clock for a local queue, real time for a Redis one. */
export function clockFor (t: Test, type: 'local' | 'redis'): TestClock {
  return type === 'local' ? fakeClock(t) : realClock
}
