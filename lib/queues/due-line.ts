// The due tasks of a local queue, in the order they are served. Tasks without a group wait in one
// FIFO; each group with due tasks has a FIFO of its own, and the groups take turns (round robin),
// the ungrouped tasks taking theirs as one more group. A group with `limit` tasks in flight is set
// aside until one of them settles, so a turn never waits on a full group. Until a task with a group
// comes, the turns are empty and a task is taken straight off the ungrouped FIFO.
import type { TaskMessage } from '../../types'
import { Fifo } from './fifo'

/** A task as the line holds it: served only while `state` is still `waiting`. */
export interface DueTask {
  readonly message: TaskMessage
  state: string
}

interface Group<T> {
  readonly name: string
  readonly tasks: Fifo<T>
  inFlight: number
  /** In the turns now. */
  inTurn: boolean
  /** Set aside at its limit, with tasks still due. */
  full: boolean
}

/** The turn of the tasks without a group. */
const ungroupedTurn = Symbol('ungrouped')

export class DueLine<T extends DueTask> {
  private readonly ungrouped = new Fifo<T>()
  /** Groups that have due tasks or tasks in flight. */
  private readonly groups = new Map<string, Group<T>>()
  /** Whose turn is next: groups with due tasks and room, and the ungrouped tasks; empty while no group has due tasks. */
  private readonly turns = new Fifo<Group<T> | typeof ungroupedTurn>()
  /** Most tasks of one group in flight (Infinity: no limit). */
  private readonly limit: number

  constructor (limit = Infinity) {
    this.limit = limit
  }

  /** Queues a task at the back of its line. */
  push (task: T): void {
    const name = task.message.group
    if (name === undefined) {
      this.ungrouped.push(task)
      return
    }
    const group = this.groupOf(name)
    group.tasks.push(task)
    this.offerTurn(group)
  }

  /** Puts a task back at the head of its line (a released one): next of its group. */
  unshift (task: T): void {
    const name = task.message.group
    if (name === undefined) {
      this.ungrouped.unshift(task)
      return
    }
    const group = this.groupOf(name)
    group.tasks.unshift(task)
    this.offerTurn(group)
  }

  /**
   * The next task to serve, taken off its line and counted in flight in its group. Each step
   * either serves a task or takes a group out of the turns (drained, or set aside at its limit),
   * so the loop ends.
   */
  take (): T | undefined {
    while (this.turns.size > 0) {
      const turn = this.turns.shift() as Group<T> | typeof ungroupedTurn
      if (turn === ungroupedTurn) {
        // Alone in the turns, it leaves them: no group has due tasks with room.
        if (this.turns.size > 0) this.turns.push(ungroupedTurn)
        const task = takeWaiting(this.ungrouped)
        if (task !== undefined) return task
        continue
      }
      turn.inTurn = false
      if (turn.inFlight >= this.limit) {
        turn.full = true
        continue
      }
      const task = takeWaiting(turn.tasks)
      if (task === undefined) {
        this.forgetIdle(turn)
        continue
      }
      turn.inFlight++
      if (turn.tasks.size > 0) {
        if (turn.inFlight < this.limit) this.enterTurns(turn)
        else turn.full = true
      }
      return task
    }
    return takeWaiting(this.ungrouped)
  }

  /**
   * A task of group `name` left flight: its slot is free. True when that group has due tasks and
   * takes turns again (a receiver waiting for work may take one).
   */
  settled (name: string): boolean {
    const group = this.groups.get(name)
    if (group === undefined) return false
    group.inFlight--
    if (group.full) {
      group.full = false
      this.offerTurn(group)
      return group.inTurn
    }
    this.forgetIdle(group)
    return false
  }

  /**
   * Takes the tasks that are no longer waiting (cancelled, dropped) out of every line. They are
   * otherwise skipped only as they reach a head, which never comes while nothing consumes the
   * queue: a reset() would keep every task it dropped in memory until then.
   */
  prune (): void {
    for (const line of this.lines()) line.retain((task) => task.state === 'waiting')
    for (const group of [...this.groups.values()]) {
      // Set aside at its limit with nothing due left: nothing to come back to when a slot frees.
      if (group.tasks.size === 0) group.full = false
      this.forgetIdle(group)
    }
  }

  /**
   * The due tasks still waiting, by line: the ungrouped ones, then each group's in the order of
   * the turns, then the groups set aside. Within a line, next to run first.
   */
  * values (): IterableIterator<T> {
    for (const line of this.lines()) {
      for (const task of line.values()) if (task.state === 'waiting') yield task
    }
  }

  /** The first task still waiting of each line. */
  * heads (): IterableIterator<T> {
    for (const line of this.lines()) {
      for (const task of line.values()) {
        if (task.state !== 'waiting') continue
        yield task
        break
      }
    }
  }

  private * lines (): IterableIterator<Fifo<T>> {
    yield this.ungrouped
    for (const turn of this.turns.values()) if (turn !== ungroupedTurn) yield turn.tasks
    for (const group of this.groups.values()) if (!group.inTurn) yield group.tasks
  }

  private groupOf (name: string): Group<T> {
    let group = this.groups.get(name)
    if (group === undefined) {
      group = { name, tasks: new Fifo<T>(), inFlight: 0, inTurn: false, full: false }
      this.groups.set(name, group)
    }
    return group
  }

  /** A group with due tasks takes turns, unless it already does or waits at its limit. */
  private offerTurn (group: Group<T>): void {
    if (!group.inTurn && !group.full && group.tasks.size > 0) this.enterTurns(group)
  }

  /** The group's turn comes after every line that has one now: the ungrouped tasks take theirs too. */
  private enterTurns (group: Group<T>): void {
    if (this.turns.size === 0) this.turns.push(ungroupedTurn)
    this.turns.push(group)
    group.inTurn = true
  }

  /** Forgets a group with nothing due, in flight or to come back to: many groups come and go. */
  private forgetIdle (group: Group<T>): void {
    if (group.inFlight === 0 && !group.inTurn && !group.full && group.tasks.size === 0) this.groups.delete(group.name)
  }
}

/** The first task of `line` still waiting (cancelled ones are dropped on the way). */
function takeWaiting<T extends DueTask> (line: Fifo<T>): T | undefined {
  for (let task = line.shift(); task !== undefined; task = line.shift()) {
    if (task.state === 'waiting') return task
  }
  return undefined
}
