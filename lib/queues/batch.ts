// Round trips to Redis cost more than the commands: a consumer at full speed would spend most of
// its time waiting for one reply per task. This sends work in batches, one batch at a time.

interface Pending<T, R> {
  item: T
  resolve: (result: R) => void
  reject: (error: unknown) => void
}

/**
 * Gathers items and sends them in batches, with one batch on its way at a time: an item goes out
 * in the same turn of the event loop when nothing else is being sent (so an idle sender adds no
 * delay worth the name), and the items that arrive meanwhile go together in the next batch. Under load, batches grow with the round-trip
 * time. `sendBatch` resolves with one result per item, in order; if it rejects, every item of the
 * batch rejects with its error.
 */
export class BatchSender<T, R> {
  private readonly sendBatch: (items: T[]) => Promise<R[]>
  private readonly maxBatch: number
  private queued: Array<Pending<T, R>> = []
  private flight: Promise<void> | undefined

  constructor (sendBatch: (items: T[]) => Promise<R[]>, maxBatch: number) {
    this.sendBatch = sendBatch
    this.maxBatch = maxBatch
  }

  send (item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queued.push({ item, resolve, reject })
      this.flight ??= this.flush()
    })
  }

  /** Resolves once nothing is queued or on its way. */
  async idle (): Promise<void> {
    while (this.flight !== undefined) await this.flight
  }

  private async flush (): Promise<void> {
    // The first batch leaves once the event loop has run what is ready now: the callbacks of this
    // turn (other tasks finishing, the consumer asking for the next) join it.
    await new Promise((resolve) => setImmediate(resolve))
    while (this.queued.length > 0) {
      const batch = this.queued.length <= this.maxBatch ? this.queued : this.queued.slice(0, this.maxBatch)
      this.queued = this.queued.length <= this.maxBatch ? [] : this.queued.slice(this.maxBatch)
      try {
        const results = await this.sendBatch(batch.map(({ item }) => item))
        for (let index = 0; index < batch.length; index++) batch[index].resolve(results[index])
      } catch (error) {
        for (const pending of batch) pending.reject(error)
      }
    }
    this.flight = undefined
  }
}
