// The rate limit of a local queue, as a sliding log: the start times of the latest `max` tries. A
// try may start once the oldest of them is `timeWindow` old, so no span of `timeWindow` ms ever
// holds more than `max` starts (a Redis queue keeps the same log in Redis, see rate-limit.lua).
import type { RateLimit } from '../options'

export class RateWindow {
  private readonly max: number
  private readonly windowMs: number
  /** Start times (ms), a ring of at most `max`; once full, `oldest` is where the oldest is. */
  private readonly starts: number[] = []
  private oldest = 0
  /** Calls `onRoom` once the window has room again, after hasRoom() said it had none. */
  private timer: NodeJS.Timeout | undefined
  private readonly onRoom: () => void

  constructor ({ max, timeWindow }: RateLimit, onRoom: () => void) {
    this.max = max
    this.windowMs = timeWindow
    this.onRoom = onRoom
  }

  /** Ms until another try may start: 0 when one may now. */
  wait (now: number): number {
    if (this.starts.length < this.max) return 0
    // Never longer than a window: a clock set back must not hold the queue up for longer.
    return Math.max(0, Math.min(this.windowMs, this.starts[this.oldest] + this.windowMs - now))
  }

  /** Whether a try may start now; when not, onRoom() is called once one may. */
  hasRoom (): boolean {
    const wait = this.wait(Date.now())
    if (wait === 0) return true
    // Not unref()'d, as the timers of delayed tasks: a script awaiting drain() must stay alive.
    this.timer ??= setTimeout(() => {
      this.timer = undefined
      this.onRoom()
    }, wait)
    return false
  }

  /** A try started (after hasRoom() said it may). */
  record (now = Date.now()): void {
    if (this.starts.length < this.max) {
      this.starts.push(now)
      return
    }
    this.starts[this.oldest] = now
    this.oldest = (this.oldest + 1) % this.max
  }

  close (): void {
    clearTimeout(this.timer)
    this.timer = undefined
  }
}
