import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const root = join(import.meta.dirname, "..");
const tsx = join(root, "node_modules", ".bin", "tsx");
const examples = readdirSync(join(root, "examples")).filter((f) => f.endsWith(".ts"));

// What each example must print to count as working; an example not listed must at least exit 0.
const expected: Record<string, RegExp[]> = {
  "demo.ts": [
    /ejected for 1\.5 s here.*the default is 30 s/,
    /0 failed, 100% served in us-east-1/,
    /0 failed, 0% served in us-east-1/,
    /on the way back: \d+ calls, 0 failed/,
    /all calls home again .*\n(.*\n)* {2}200 calls, 0 failed, 100% served in us-east-1/,
  ],
  "mtls.ts": [
    /carried over mTLS: \{\s*served_by: 'payments'/,
    /impostor refused: east\/127\.0\.0\.1:\d+ MESHLINK_ERR_TLS_IDENTITY/,
    /a new connection presents: URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/checkout-v2/,
  ],
  "wrap-fetch.ts": [/served_by: 'inventory in us-west-2'/, /served_by: 'a host outside the mesh'/],
};

describe("examples", () => {
  it.each(examples)(
    "%s runs to completion",
    async (file) => {
      const env = { ...process.env };
      for (const k of Object.keys(env)) if (k.startsWith("MESHLINK_")) delete env[k];
      const { stdout } = await run(tsx, [join("examples", file)], { cwd: root, env, timeout: 60_000 });
      for (const pattern of expected[file] ?? []) expect(stdout).toMatch(pattern);
    },
    90_000,
  );
});
