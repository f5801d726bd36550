// Closing shares one deadline between its steps: each await is bounded by what is left of it, so
// a Redis that stopped answering cannot hold `app.close()` past `closeTimeout` and a small margin.

/** How long releasing the tasks still running may take past `closeTimeout`, which waiting for them may use up. */
export const releaseGrace = 1000

/** The error of a step that ran out of time. */
export class OutOfTimeError extends Error {
  constructor (what: string) {
    super(`${what}: out of time`)
    this.name = 'OutOfTimeError'
  }
}

/**
 * Settles as `work` does, or rejects with OutOfTimeError once `deadline` (ms since the epoch)
 * passed. `work` carries on; a later rejection of it is handled (by the race) and goes nowhere.
 */
export async function byDeadline<T> (work: Promise<T>, deadline: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const outOfTime = new Promise<never>((resolve, reject) => {
    timer = setTimeout(() => reject(new OutOfTimeError(what)), Math.max(0, deadline - Date.now()))
  })
  try {
    return await Promise.race([work, outOfTime])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * What a backend's own close gets past the deadline it was given, before the app stops waiting for
 * it: the built-in ones drop their connections at the deadline, and need a moment to do it.
 */
export const closeSlack = 250
