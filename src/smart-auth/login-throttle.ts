import { isIPv6 } from 'node:net';

export interface LoginThrottleOptions {
  /** Failed logins of one username within the window that lock it. */
  maxFailures: number;
  /** Failed logins from one network address within the window that lock the address. */
  addressMaxFailures: number;
  windowSeconds: number;
  /** The first lock; each further lock of the same username or address doubles, up to lockMaxSeconds. */
  lockSeconds: number;
  lockMaxSeconds: number;
}

/** Why a login is refused before its password is checked. */
export interface LoginRefusal {
  /** `account`/`address`: locked after too many failures; `busy`: as many attempts in flight as failures left before a lock. */
  reason: 'account' | 'address' | 'busy';
  retryAfterSeconds: number;
}

/** One login attempt let through: report how it ended exactly once. */
export interface LoginTicket {
  succeeded(): void;
  /** Returns what this failure locked, if anything. */
  failed(): { locked?: 'account' | 'address'; lockSeconds?: number };
  /** The password was not checked (e.g. the hashing queue was full): counts neither way. */
  abandoned(): void;
}

interface Entry {
  failures: number;
  windowStart: number;
  lastFailure: number;
  lockedUntil: number;
  /** Locks so far: the next lasts lockSeconds * 2^locks. */
  locks: number;
  inFlight: number;
}

/** Entries kept per map; beyond it the least recently failed entry that is not locked goes first. */
const MAX_ENTRIES = 10_000;
/** Usernames are at most 64 characters (registry.ts); longer ones cannot exist and share one key. */
const MAX_USERNAME_KEY = 65;

/**
 * Login throttling, per username and per network address, in memory and bounded in size. After
 * `maxFailures` failed logins of a username within the window (`addressMaxFailures` from an
 * address, whatever usernames it tries) it is locked for lockSeconds, then 2x, 4x... up to
 * lockMaxSeconds; the doubling is forgotten after a quiet lockMaxSeconds. While locked, attempts
 * are refused before any password is checked. A success clears its username's record, not its
 * address's (else one valid account would let an address guess others' passwords without end).
 * Unknown usernames are tracked like known ones, so a lock does not tell whether a user exists.
 */
export class LoginThrottle {
  private readonly accounts = new Map<string, Entry>();
  private readonly addresses = new Map<string, Entry>();

  constructor(private readonly o: LoginThrottleOptions, private readonly now: () => number = Date.now) {}

  /** Before checking a password: a refusal, or a ticket to report the outcome with. */
  begin(username: string, address: string | undefined): { refused: LoginRefusal } | { ticket: LoginTicket } {
    const now = this.now();
    const accountKey = username.slice(0, MAX_USERNAME_KEY);
    const addressKey = addressKeyOf(address);
    const account = this.live(this.accounts, accountKey, now);
    const from = this.live(this.addresses, addressKey, now);
    const locked = [
      account && account.lockedUntil > now ? { reason: 'account' as const, until: account.lockedUntil } : undefined,
      from && from.lockedUntil > now ? { reason: 'address' as const, until: from.lockedUntil } : undefined,
    ].filter((x) => x !== undefined).sort((a, b) => b.until - a.until)[0];
    if (locked) return { refused: { reason: locked.reason, retryAfterSeconds: Math.max(1, Math.ceil((locked.until - now) / 1000)) } };
    // Attempts in flight may all fail: never let more through than failures are left before a lock.
    if ((account && account.failures + account.inFlight >= this.o.maxFailures) || (from && from.failures + from.inFlight >= this.o.addressMaxFailures)) {
      return { refused: { reason: 'busy', retryAfterSeconds: 1 } };
    }
    const a = this.entry(this.accounts, accountKey, now);
    const d = this.entry(this.addresses, addressKey, now);
    a.inFlight++;
    d.inFlight++;
    let done = false;
    const finish = () => {
      if (done) return false;
      done = true;
      a.inFlight--;
      d.inFlight--;
      return true;
    };
    return {
      ticket: {
        succeeded: () => {
          if (!finish()) return;
          if (this.accounts.get(accountKey) === a && a.inFlight === 0) this.accounts.delete(accountKey);
          else { a.failures = 0; a.locks = 0; }
        },
        failed: () => {
          if (!finish()) return {};
          const t = this.now();
          const accountLock = this.fail(this.accounts, accountKey, a, this.o.maxFailures, t);
          const addressLock = this.fail(this.addresses, addressKey, d, this.o.addressMaxFailures, t);
          if (addressLock) return { locked: 'address', lockSeconds: addressLock };
          if (accountLock) return { locked: 'account', lockSeconds: accountLock };
          return {};
        },
        abandoned: () => { finish(); },
      },
    };
  }

  /** Entries tracked (usernames, addresses). */
  get size(): { accounts: number; addresses: number } {
    return { accounts: this.accounts.size, addresses: this.addresses.size };
  }

  /** Counts a failure; returns the lock's length in seconds when this one locks. */
  private fail(map: Map<string, Entry>, key: string, e: Entry, max: number, now: number): number | undefined {
    if (now - e.windowStart >= this.o.windowSeconds * 1000) {
      e.failures = 0;
      e.windowStart = now;
    }
    e.failures++;
    e.lastFailure = now;
    // Most recently failed last, so eviction takes the stalest first.
    if (map.get(key) === e) map.delete(key);
    map.set(key, e);
    if (e.failures < max) return undefined;
    const seconds = Math.min(this.o.lockMaxSeconds, this.o.lockSeconds * 2 ** Math.min(e.locks, 30));
    e.lockedUntil = now + seconds * 1000;
    e.locks++;
    e.failures = 0;
    e.windowStart = now;
    return seconds;
  }

  /** The entry for key, unless it has nothing left to say (then it is dropped). */
  private live(map: Map<string, Entry>, key: string, now: number): Entry | undefined {
    const e = map.get(key);
    if (e && this.stale(e, now)) {
      map.delete(key);
      return undefined;
    }
    return e;
  }

  private stale(e: Entry, now: number): boolean {
    if (e.inFlight > 0 || e.lockedUntil > now) return false;
    const windowOver = now - e.lastFailure >= this.o.windowSeconds * 1000;
    const locksForgotten = e.locks === 0 || now - Math.max(e.lockedUntil, e.lastFailure) >= this.o.lockMaxSeconds * 1000;
    return windowOver && locksForgotten;
  }

  private entry(map: Map<string, Entry>, key: string, now: number): Entry {
    const found = map.get(key);
    if (found) return found;
    if (map.size >= MAX_ENTRIES) this.evict(map, now);
    const e: Entry = { failures: 0, windowStart: now, lastFailure: 0, lockedUntil: 0, locks: 0, inFlight: 0 };
    map.set(key, e);
    return e;
  }

  private evict(map: Map<string, Entry>, now: number): void {
    for (const [k, e] of map) if (this.stale(e, now)) map.delete(k);
    if (map.size < MAX_ENTRIES) return;
    for (const [k, e] of map) {
      if (e.lockedUntil <= now && e.inFlight === 0) {
        map.delete(k);
        return;
      }
    }
    map.delete(map.keys().next().value!);
  }
}

/**
 * The throttled unit of an address: an IPv4 address, or the /64 of an IPv6 address (one host
 * usually holds a whole /64, so single IPv6 addresses would cost an attacker nothing).
 */
export function addressKeyOf(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head, tail] = address.toLowerCase().split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}
