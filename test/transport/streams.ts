import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

/** 16 MiB of random bytes: more than every buffer between a server and a caller that reads slowly. */
export const BIG_BODY = randomBytes(16 << 20);
/** Its SHA-256. */
export const BIG_BODY_SHA256 = sha256(BIG_BODY);

export function sha256(data: Buffer | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A server handler that streams `body` in 64 KiB writes, waiting for `drain` as a well-behaved server does. */
export function streamBody(body: Buffer = BIG_BODY) {
  return (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(body.length) });
    let sent = 0;
    const pump = () => {
      while (sent < body.length) {
        const chunk = body.subarray(sent, sent + (64 << 10));
        sent += chunk.length;
        if (!res.write(chunk)) {
          res.once("drain", pump);
          return;
        }
      }
      res.end();
    };
    pump();
  };
}

/** A server handler that sends the headers and a first chunk, then nothing more until the connection closes. */
export function stallAfterFirstChunk(onClose: () => void) {
  return (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("first chunk;");
    res.on("close", onClose);
  };
}

/** Lets a few turns of the event loop pass: a slow reader's pause between chunks (no timer). */
export async function yieldTurns(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Reads a Node stream slowly, chunk by chunk, and returns its bytes and the most it ever held buffered. */
export async function readSlowly(
  body: AsyncIterable<unknown> & { readableLength?: number },
): Promise<{ data: Buffer; maxBuffered: number }> {
  const chunks: Buffer[] = [];
  let maxBuffered = 0;
  for await (const chunk of body) {
    chunks.push(chunk as Buffer);
    await yieldTurns();
    maxBuffered = Math.max(maxBuffered, body.readableLength ?? 0);
  }
  return { data: Buffer.concat(chunks), maxBuffered };
}

/** Reads a WHATWG stream slowly and returns its bytes. */
export async function readWebSlowly(body: ReadableStream<Uint8Array>): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    chunks.push(chunk);
    await yieldTurns();
  }
  return Buffer.concat(chunks);
}
