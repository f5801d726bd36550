/**
 * Delay before retry number `retries + 1`: `min` doubled for each retry already made, capped at
 * `max`, then drawn from its upper half so that tasks failing together do not return together.
 */
export function retryDelay (retries: number, bounds: { min: number, max: number }): number {
  const ceiling = Math.min(bounds.max, bounds.min * 2 ** Math.min(retries, 52))
  return Math.round(ceiling / 2 + Math.random() * ceiling / 2)
}
