/**
 * The admin endpoint's address: `host:port` (`[::1]:port` for IPv6), on a
 * loopback address unless remote access is asked for in so many words. An
 * admin endpoint shows the endpoints, health and configuration of a running
 * process: on any other interface, whoever reaches the pod reads them.
 *
 * @module
 */

import { isIP } from "node:net";
import { ConfigError } from "../errors.js";

/** Where the admin endpoint listens. */
export interface AdminAddress {
  /** The host to bind: an IP address or `localhost`. */
  readonly host: string;
  /** The port; 0 for any free port (the mesh then reports the one it got). */
  readonly port: number;
  /** True when the host may be other than a loopback address. */
  readonly allowRemote: boolean;
}

/** The `admin` option: `host:port`, or the address with remote access allowed; `false` turns it off. */
export type AdminOption =
  | string
  | false
  | {
      /** `host:port`, e.g. `127.0.0.1:15090` or `[::1]:15090`. */
      address: string;
      /** Listen on a non-loopback address (`0.0.0.0`, a pod IP); default false. */
      allowRemote?: boolean | undefined;
    };

const HOST_NAME =
  /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** True for a loopback host: 127.0.0.0/8, `::1` (also IPv4-mapped) or `localhost`. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === "localhost") return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  if (isIP(h) === 6) return h === "::1" || h === "0:0:0:0:0:0:0:1" || /^::ffff:127\./.test(h);
  return false;
}

/**
 * Parses an admin address. `source` names the option or variable for the
 * error.
 *
 * @throws {@link ConfigError} for a malformed address, a port outside
 * 0–65535, or a non-loopback host without `allowRemote`.
 */
export function parseAdminAddress(raw: string, source: string, allowRemote = false): AdminAddress {
  const text = raw.trim();
  const colon = text.lastIndexOf(":");
  if (colon <= 0) {
    throw new ConfigError(source, raw, "expected host:port, e.g. 127.0.0.1:15090 or [::1]:15090");
  }
  let host = text.slice(0, colon);
  const portText = text.slice(colon + 1);
  if (host.startsWith("[") && host.endsWith("]")) {
    host = host.slice(1, -1);
    if (isIP(host) !== 6) throw new ConfigError(source, raw, "the bracketed host is no IPv6 address");
  } else if (host.includes(":")) {
    throw new ConfigError(source, raw, "an IPv6 host is written in brackets: [::1]:15090");
  } else if (isIP(host) === 0 && !HOST_NAME.test(host)) {
    throw new ConfigError(source, raw, "the host is no IP address or host name");
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65_535) {
    throw new ConfigError(source, raw, "the port must be a number from 0 to 65535");
  }
  if (!allowRemote && !isLoopbackHost(host)) {
    throw new ConfigError(
      source,
      raw,
      "not a loopback address: the admin endpoint listens on 127.0.0.1, ::1 or localhost unless allowRemote is set",
    );
  }
  return Object.freeze({ host, port: Number(portText), allowRemote });
}
