/**
 * Recovery bookkeeping of one subscription (the Rust client's `Recovery`): the last
 * position delivered, live publications held back while a (re)subscribe is in flight, and
 * the merge of a subscribe reply's recovered publications with live ones, in order, none
 * twice. Pure logic: no I/O, no timers.
 */
import type { Position, Publication } from "./types.js";

/** The reply to `subscribe`. */
export interface SubscribeReply {
  offset: number;
  epoch: string;
  recovered?: boolean;
  publications?: Publication[];
}

/** What the bookkeeping tells the subscription to emit, in order. */
export type RecoveryOutput =
  | { kind: "subscribed"; position: Position }
  | { kind: "recovered"; recovered: boolean; missed: number; position: Position }
  | { kind: "publication"; publication: Publication };

export class Recovery {
  /** The last position delivered (or the start position); undefined before the first reply. */
  position: Position | undefined;
  private held: Publication[] | undefined;

  constructor(start?: Position) {
    this.position = start;
  }

  /** A subscribe is in flight: hold live publications back until its reply. */
  begin(): void {
    this.held = [];
  }

  /** The subscribe failed: release what was held back as it is. */
  abort(out: RecoveryOutput[]): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const p of held) this.deliver(p, out);
  }

  private isNew(p: Publication): boolean {
    const pos = this.position;
    return !pos || p.epoch !== pos.epoch || p.offset > pos.offset;
  }

  /** Deliver `p` unless it is at or before the last delivered position (a duplicate). */
  deliver(p: Publication, out: RecoveryOutput[]): void {
    if (!this.isNew(p)) return;
    this.position = { offset: p.offset, epoch: p.epoch };
    out.push({ kind: "publication", publication: p });
  }

  /** A live publication arrived. */
  onPublication(p: Publication, out: RecoveryOutput[]): void {
    if (this.held) this.held.push(p);
    else this.deliver(p, out);
  }

  /** The subscribe reply arrived; `resumed`: it asked for recovery from `position`. */
  onReply(reply: SubscribeReply, resumed: boolean, out: RecoveryOutput[]): void {
    const top: Position = { offset: reply.offset, epoch: reply.epoch };
    const held = (this.held ?? []).sort((a, b) => a.offset - b.offset);
    this.held = undefined;
    if (!resumed || !this.position) {
      this.position = top;
      out.push({ kind: "subscribed", position: top });
    } else if (!reply.recovered) {
      // The gap cannot be filled (history trimmed, epoch changed): continue from the top.
      this.position = top;
      out.push({ kind: "recovered", recovered: false, missed: 0, position: top });
    } else {
      const missed = (reply.publications ?? [])
        .slice()
        .sort((a, b) => a.offset - b.offset)
        .filter((p) => this.isNew(p));
      const last = missed[missed.length - 1];
      const position = last ? { offset: last.offset, epoch: last.epoch } : this.position;
      out.push({ kind: "recovered", recovered: true, missed: missed.length, position });
      for (const p of missed) this.deliver(p, out);
    }
    for (const p of held) this.deliver(p, out);
  }
}
