/**
 * `meshlink call <url>`: one call through the mesh from this environment,
 * and what happened to it — which endpoint answered, every attempt with
 * its tier, why it was made and how it ended, timings and the trace id.
 * The CLI reads this from the call's own spans, recorded in memory.
 *
 * @module
 */

import { Attr } from "../../telemetry/tracing.js";
import type { Command, CommandContext, OptionValues } from "../command.js";
import { ExitCode, errorCodeOf, exitCodeOf, UsageError } from "../exit.js";
import { withMesh } from "../mesh.js";
import { formatMs, type Output } from "../output.js";
import { type RecordedSpan, SpanRecorder } from "../recorder.js";

const USAGE = `Usage: meshlink call <url> [-X <method>] [-H 'name: value']… [-d <body>] [--timeout <ms>] [--json]

Makes one call through the mesh, as the library would from this environment
and config file, and shows which endpoint answered, every attempt (its
endpoint, tier, why it was made — first, retry or hedge — and how it
ended), the timings and the trace id. The response body follows.

  <url>               e.g. http://my-service.default.svc.cluster.local:8080/healthz
  -X, --method <m>    the method (default GET)
  -H, --header <h>    a request header, 'name: value'; repeatable
  -d, --data <body>   a request body
  --timeout <ms>      the call's deadline (x-meshlink-timeout-ms)
  --no-body           do not print the response body
  --config <file>     a config file instead of MESHLINK_CONFIG
  --json              one JSON document on standard output (body as text)
  -h, --help          this help

Exit codes: 0 a response below 400, 1 a response of 400 or more, 2 bad
usage, 3 invalid configuration, 4 no backend knows the service,
5 discovery failed, no endpoint answered or the call failed.`;

/** The most of a body shown. */
const MAX_BODY = 64 * 1024;

/** One attempt, as the CLI shows it. */
interface AttemptRow {
  readonly attempt: number;
  readonly endpoint: string;
  readonly cluster: string;
  readonly locality: string;
  readonly tier: string;
  readonly cause: string;
  readonly result: string;
  readonly failover: string | undefined;
  readonly retryReason: string | undefined;
  readonly durationMs: number | undefined;
}

/** `meshlink call`. */
export const callCommand: Command = {
  name: "call",
  summary: "make one call through the mesh: endpoint, attempts, timings, trace id",
  usage: USAGE,
  options: {
    method: { type: "string", short: "X" },
    header: { type: "string", short: "H", multiple: true },
    data: { type: "string", short: "d" },
    timeout: { type: "string" },
    "no-body": { type: "boolean" },
    config: { type: "string", short: "c" },
  },
  async run(values: OptionValues, positionals: string[], ctx: CommandContext): Promise<number> {
    if (positionals.length !== 1) throw new UsageError("call one URL", "call");
    const target = positionals[0]!;
    try {
      const u = new URL(target);
      if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error("protocol");
    } catch {
      throw new UsageError(`${JSON.stringify(target)} is not an http:// or https:// URL`, "call");
    }
    const method = (
      (values.method as string | undefined) ?? (values.data === undefined ? "GET" : "POST")
    ).toUpperCase();
    const headers = new Headers();
    for (const h of (values.header as string[] | undefined) ?? []) {
      const colon = h.indexOf(":");
      if (colon <= 0) throw new UsageError(`header ${JSON.stringify(h)}: expected 'name: value'`, "call");
      try {
        headers.append(h.slice(0, colon).trim(), h.slice(colon + 1).trim());
      } catch {
        throw new UsageError(`header ${JSON.stringify(h)}: not a valid header`, "call");
      }
    }
    if (values.timeout !== undefined) {
      const ms = Number(values.timeout);
      if (!Number.isInteger(ms) || ms <= 0) throw new UsageError("--timeout takes ms, e.g. 2000", "call");
      headers.set("x-meshlink-timeout-ms", String(ms));
    }
    const recorder = new SpanRecorder();
    recorder.register();
    return withMesh(ctx, values.config as string | undefined, async (mesh) => {
      const started = performance.now();
      let res: Response | undefined;
      let bytes = new Uint8Array(0);
      let failure: unknown;
      try {
        res = await mesh.fetch(target, {
          method,
          headers,
          ...(values.data !== undefined && { body: values.data as string }),
        });
        bytes = new Uint8Array(await res.arrayBuffer());
      } catch (err) {
        // fetch wraps the mesh's error ("fetch failed"): the cause is what to show.
        failure = (err as { cause?: unknown }).cause ?? err;
      }
      const durationMs = performance.now() - started;
      const call = recorder.spans.find(
        (s) => s.parentSpanId === undefined && s.attributes[Attr.SERVICE] !== undefined,
      );
      const attempts = recorder.spans
        .filter((s) => call !== undefined && s.parentSpanId === call.spanId)
        .map(rowOf);
      const body = new TextDecoder().decode(bytes.subarray(0, MAX_BODY));
      const code =
        failure !== undefined
          ? exitCodeOf(failure)
          : res!.status >= 400
            ? ExitCode.ERROR_RESPONSE
            : ExitCode.OK;
      if (ctx.json) {
        ctx.out.json({
          url: target,
          method,
          status: res?.status,
          durationMs,
          meshName: call !== undefined,
          service: call?.attributes[Attr.SERVICE],
          endpoint: call?.attributes[Attr.ENDPOINT],
          traceId: call?.traceId,
          attempts,
          ...(failure !== undefined && {
            error: { code: errorCodeOf(failure), message: messageOf(failure) },
          }),
          ...(res !== undefined && { bodyBytes: bytes.length, body }),
        });
        return code;
      }
      const out = ctx.out;
      const result =
        res === undefined
          ? out.style("red", `failed: ${messageOf(failure)}`)
          : out.style(res.status >= 400 ? "red" : "green", `${res.status} ${res.statusText}`.trim());
      out.line(`${method} ${target} → ${result} in ${formatMs(durationMs)}`);
      if (call === undefined) {
        out.line(out.style("yellow", "not a mesh name here: the call went to the host as it is"));
      } else {
        printCall(out, call, attempts);
      }
      if (values["no-body"] !== true && bytes.length > 0) {
        out.line();
        out.line(body.replace(/\n$/, ""));
        if (bytes.length > MAX_BODY) out.line(out.style("dim", `… ${bytes.length - MAX_BODY} more bytes`));
      }
      return code;
    });
  },
};

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function rowOf(span: RecordedSpan): AttemptRow {
  const a = span.attributes;
  const status = a["http.response.status_code"];
  const outcome = a[Attr.OUTCOME];
  const error = a["error.type"];
  return {
    attempt: Number(a[Attr.ATTEMPT] ?? 0),
    endpoint: String(a[Attr.ENDPOINT] ?? ""),
    cluster: String(a[Attr.CLUSTER] ?? ""),
    locality: [a[Attr.REGION], a[Attr.ZONE]].filter((x) => x !== undefined && x !== "").join("/"),
    tier: String(a[Attr.TIER] ?? ""),
    cause: String(a[Attr.CAUSE] ?? "first"),
    result:
      status !== undefined
        ? String(status) +
          (outcome !== undefined && !String(outcome).startsWith("status_") ? ` ${outcome}` : "")
        : String(outcome ?? error ?? (span.end === undefined ? "in flight" : "ok")),
    failover: a[Attr.FAILOVER] === true ? String(a[Attr.FAILOVER_REASON] ?? "") : undefined,
    retryReason: a[Attr.RETRY_REASON] === undefined ? undefined : String(a[Attr.RETRY_REASON]),
    durationMs: span.end === undefined ? undefined : span.end - span.start,
  };
}

function printCall(out: Output, call: RecordedSpan, attempts: readonly AttemptRow[]): void {
  const a = call.attributes;
  const winner = attempts.find((r) => r.endpoint === a[Attr.ENDPOINT]);
  const fields: [string, string][] = [
    ["service", String(a[Attr.SERVICE])],
    [
      "endpoint",
      a[Attr.ENDPOINT] === undefined
        ? out.style("red", "none answered")
        : `${a[Attr.ENDPOINT]} (tier ${a[Attr.TIER]}` +
          (a[Attr.FAILOVER] === true
            ? `, ${out.style("yellow", `failover: ${a[Attr.FAILOVER_REASON]}`)}`
            : "") +
          (a[Attr.PANIC] === true ? `, ${out.style("red", "panic")}` : "") +
          ")",
    ],
    [
      "attempts",
      `${attempts.length}${a[Attr.HEDGED] === true ? " (hedged)" : ""}${a[Attr.BUDGET_EXHAUSTED] === true ? ", retry budget exhausted" : ""}`,
    ],
    ["trace", call.traceId],
  ];
  if (winner === undefined && a["error.type"] !== undefined) fields.push(["error", String(a["error.type"])]);
  for (const [k, v] of fields) out.line(`${out.style("bold", k.padEnd(8))}  ${v}`);
  out.line();
  out.table(
    ["#", "ENDPOINT", "LOCALITY", "TIER", "CAUSE", "RESULT", "TIME"],
    attempts.map((r) => [
      String(r.attempt),
      r.endpoint,
      r.locality || "-",
      r.failover === undefined ? r.tier : `${r.tier} ${out.style("yellow", `(failover: ${r.failover})`)}`,
      r.retryReason === undefined ? r.cause : `${r.cause} (${r.retryReason})`,
      /^[23]\d\d/.test(r.result) ? out.style("green", r.result) : out.style("red", r.result),
      formatMs(r.durationMs),
    ]),
    [0, 6],
  );
}
