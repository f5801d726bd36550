// The Lua scripts of the Redis queue: every state change that touches more than one key runs in
// one of them, so no other client ever sees a task in two places or in none. Each script is a
// file of scripts/ that opens with what it does, its KEYS, its ARGV and what it returns.
//
// The files are read once, when this module loads, from next to it: lib/ when the tests run the
// TypeScript sources, dist/lib/ in the package (the build copies them there). A line
// `-- @include <name>` stands for the snippet scripts/lib/<name>.lua, so that what several
// scripts share (the Redis clock in ms, the dead-letter push with its trim) is written once.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Cluster, Redis } from 'ioredis'

const folder = join(__dirname, 'scripts')

const includeLine = /^-- @include ([a-z-]+)[ \t]*$/gm

/** A script's text with each `-- @include <name>` line replaced by that snippet of scripts/lib/. */
export function expandIncludes (text: string, readSnippet: (name: string) => string): string {
  return text.replace(includeLine, (line, name: string) => readSnippet(name).trimEnd())
}

function readSnippet (name: string): string {
  return readFileSync(join(folder, 'lib', `${name}.lua`), 'utf8')
}

/** The text Redis runs for the script of scripts/<name>.lua. */
export function loadScript (name: string): string {
  return expandIncludes(readFileSync(join(folder, `${name}.lua`), 'utf8'), readSnippet)
}

/** The commands the scripts become on a client (ioredis' defineCommand), keys first. */
export interface ScriptCommands {
  taskqueueAdd (tasks: string, waiting: string, delayed: string, base: string, ...quadruples: Array<string | number>): Promise<number>
  taskqueueAddTick (schedules: string, tasks: string, waiting: string, delayed: string, name: string, tick: number, id: string, message: string, delayMs: number, base: string): Promise<number>
  /** The `Buffer` variant: a message that is not valid UTF-8 must come back byte for byte. */
  taskqueueAckAndReserveBuffer (processing: string, waiting: string, tasks: string, inflight: string, cancelled: string, recoveries: string,
    consumers: string, heartbeat: string, recovered: string, paused: string, rateLog: string, groupOf: string, count: number, id: string,
    lifetimeMs: number, rateMax: number, rateWindowMs: number, base: string, groupConcurrency: number, ...acks: string[]): Promise<Buffer[]>
  taskqueueBury (processing: string, dead: string, tasks: string, inflight: string, recoveries: string, deadIndex: string,
    id: string, entry: string, indexId: string, deadMax: number, base: string): Promise<number>
  taskqueueRequeue (dead: string, waiting: string, tasks: string, deadIndex: string, entry: string, id: string, message: string, base: string,
    group: string): Promise<number>
  taskqueueRelease (processing: string, to: string, inflight: string, id: string, base: string): Promise<number>
  taskqueueReset (waiting: string, recovered: string, delayed: string, tasks: string, recoveries: string, cancelled: string, limit: number, base: string): Promise<number>
  taskqueueRetry (processing: string, delayed: string, tasks: string, inflight: string, id: string, next: string, delayMs: number, base: string): Promise<number>
  taskqueuePromote (delayed: string, waiting: string, limit: number, base: string): Promise<number>
  taskqueueHeartbeat (consumers: string, heartbeat: string, recovered: string, id: string, lifetimeMs: number): Promise<number>
  taskqueueReleaseOrphans (processing: string, waiting: string, recoveries: string, recovered: string, inflight: string, base: string, ...known: string[]): Promise<number>
  taskqueueRecover (consumers: string, recovered: string, dead: string, recoveries: string, lease: string, tasks: string, inflight: string,
    deadIndex: string, base: string, holder: string, leaseMs: number, maxRecoveries: number, self: string, deadMax: number): Promise<[string[], string[]] | [number]>
  taskqueueResume (paused: string, base: string): Promise<number>
  taskqueueStats (waiting: string, recovered: string, delayed: string, inflight: string, dead: string, paused: string, cancelled: string,
    tasks: string, base: string): Promise<[number, number, number, number, number, string]>
  taskqueueGet (tasks: string, delayed: string, inflight: string, deadIndex: string, id: string): Promise<[] | [string, string]>
  taskqueueCancel (tasks: string, delayed: string, inflight: string, cancelled: string, recoveries: string, id: string, base: string): Promise<number>
  taskqueueWaiting (recovered: string, waiting: string, tasks: string, cancelled: string, offset: number, limit: number, base: string): Promise<string[]>
}

/** Each script: its file under scripts/, and how many of its arguments are keys. */
export const scriptFiles = {
  taskqueueAdd: { file: 'add', numberOfKeys: 3 },
  taskqueueAddTick: { file: 'add-tick', numberOfKeys: 4 },
  taskqueueAckAndReserve: { file: 'ack-and-reserve', numberOfKeys: 12 },
  taskqueueBury: { file: 'bury', numberOfKeys: 6 },
  taskqueueRequeue: { file: 'requeue', numberOfKeys: 4 },
  taskqueueRelease: { file: 'release', numberOfKeys: 3 },
  taskqueueReset: { file: 'reset', numberOfKeys: 6 },
  taskqueueRetry: { file: 'retry', numberOfKeys: 4 },
  taskqueuePromote: { file: 'promote', numberOfKeys: 2 },
  taskqueueHeartbeat: { file: 'heartbeat', numberOfKeys: 3 },
  taskqueueReleaseOrphans: { file: 'release-orphans', numberOfKeys: 5 },
  taskqueueRecover: { file: 'recover', numberOfKeys: 8 },
  taskqueueResume: { file: 'resume', numberOfKeys: 1 },
  taskqueueStats: { file: 'stats', numberOfKeys: 8 },
  taskqueueGet: { file: 'get', numberOfKeys: 4 },
  taskqueueCancel: { file: 'cancel', numberOfKeys: 5 },
  taskqueueWaiting: { file: 'waiting', numberOfKeys: 4 }
} satisfies Record<Exclude<keyof ScriptCommands, `${string}Buffer`> | 'taskqueueAckAndReserve', { file: string, numberOfKeys: number }>

export type ScriptName = keyof typeof scriptFiles

/** The text of every script, read once. */
export const scripts = Object.fromEntries(
  Object.entries(scriptFiles).map(([name, { file, numberOfKeys }]) => [name, { lua: loadScript(file), numberOfKeys }])
) as Record<ScriptName, { lua: string, numberOfKeys: number }>

/** Defines the scripts as commands of `client` (a client handed in gets them too; defining twice is harmless). */
export function defineScripts<C extends Redis | Cluster> (client: C): C & ScriptCommands {
  for (const [name, { lua, numberOfKeys }] of Object.entries(scripts)) client.defineCommand(name, { lua, numberOfKeys })
  return client as C & ScriptCommands
}
