// A FIFO for the in-process queue: its due tasks, its groups' tasks, the turns of its groups and
// the receivers waiting for a task.

/** A FIFO that takes from the front in constant time, without Array#shift's copying. */
export class Fifo<T> {
  private items: Array<T | undefined> = []
  private head = 0

  get size (): number { return this.items.length - this.head }

  push (item: T): void { this.items.push(item) }

  unshift (item: T): void {
    if (this.head > 0) this.items[--this.head] = item
    else this.items.unshift(item)
  }

  /** The items from the front, without taking them. */
  * values (): IterableIterator<T> {
    for (let index = this.head; index < this.items.length; index++) yield this.items[index] as T
  }

  /** Keeps the items `keep` accepts, in order, and lets go of the others at once. */
  retain (keep: (item: T) => boolean): void {
    const kept: T[] = []
    for (let index = this.head; index < this.items.length; index++) {
      const item = this.items[index] as T
      if (keep(item)) kept.push(item)
    }
    this.items = kept
    this.head = 0
  }

  shift (): T | undefined {
    if (this.head === this.items.length) return undefined
    const item = this.items[this.head]
    this.items[this.head++] = undefined
    // Give the consumed front back once it is most of the array.
    if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }
}
