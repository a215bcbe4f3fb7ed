import { describe, expect, it } from "vitest";
import { colorsFor, formatMs, formatShare, Output, visibleLength } from "../../src/cli/output.js";

function sink(isTTY: boolean): { text: string; isTTY: boolean; write(s: string): void } {
  return {
    text: "",
    isTTY,
    write(s: string) {
      this.text += s;
    },
  };
}

describe("Output", () => {
  it("colours only a terminal, and never with NO_COLOR or TERM=dumb", () => {
    expect(colorsFor(sink(true), {})).toBe(true);
    expect(colorsFor(sink(false), {})).toBe(false);
    expect(colorsFor({ write() {} }, {})).toBe(false);
    expect(colorsFor(sink(true), { NO_COLOR: "1" })).toBe(false);
    expect(colorsFor(sink(true), { NO_COLOR: "" })).toBe(true);
    expect(colorsFor(sink(true), { TERM: "dumb" })).toBe(false);
    const tty = sink(true);
    new Output(tty, {}).line(new Output(tty, {}).style("red", "down"));
    expect(tty.text).toBe("\u001b[31mdown\u001b[39m\n");
    const pipe = sink(false);
    new Output(pipe, {}).line(new Output(pipe, {}).style("red", "down"));
    expect(pipe.text).toBe("down\n");
  });

  it("aligns table columns by what a terminal shows, escape codes aside", () => {
    const tty = sink(true);
    const out = new Output(tty, {});
    out.table(
      ["NAME", "N"],
      [
        [out.style("green", "a"), "1"],
        ["long-name", "10"],
      ],
      [1],
    );
    const lines = tty.text.trimEnd().split("\n");
    expect(lines.map(visibleLength)).toEqual([13, 13, 13]);
    const plain = sink(false);
    new Output(plain, {}).table(
      ["NAME", "N"],
      [
        ["a", "1"],
        ["long-name", "10"],
      ],
      [1],
    );
    expect(plain.text).toBe("NAME        N\na           1\nlong-name  10\n");
  });
});

describe("formatMs and formatShare", () => {
  it("write durations and shares for people", () => {
    expect([0.42, 12.4, 3_200, 65_000, 600_000, 9_000_000, undefined].map(formatMs)).toEqual([
      "0.4 ms",
      "12 ms",
      "3200 ms",
      "65.0 s",
      "10 min",
      "2.5 h",
      "-",
    ]);
    expect(formatShare(0.934)).toBe("93.4%");
  });
});
