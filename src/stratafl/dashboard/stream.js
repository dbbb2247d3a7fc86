// A session's live events: Server-Sent Events read with fetch(), since EventSource cannot
// send the token. Parsed here as the HTML standard describes the format; a broken stream
// is opened again with `Last-Event-ID`, so the controller resumes after the last event seen.

import { authorized, failure, quote } from "./api.js";

export const SESSION_END = new Set([
  "session_finished", "session_stopped", "session_cancelled", "session_failed",
]);
const RETRY_MS = 2000;

/** Splits a text/event-stream into events; feed it text as it arrives. */
export class EventParser {
  constructor() {
    this.buffer = "";
    this.reset();
    this.lastId = null;
    this.retry = null;
  }

  reset() {
    this.kind = "";
    this.data = [];
  }

  /** The events completed by this piece of text: {id, kind, data} with data as a string. */
  feed(text) {
    this.buffer += text;
    const events = [];
    for (;;) {
      const end = this.buffer.search(/\r\n|\r|\n/);
      // a lone "\r" at the end may be the first half of "\r\n": wait for the next piece
      if (end < 0 || (end === this.buffer.length - 1 && this.buffer[end] === "\r")) break;
      const line = this.buffer.slice(0, end);
      const width = this.buffer.startsWith("\r\n", end) ? 2 : 1;
      this.buffer = this.buffer.slice(end + width);
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      const event = this.data.length
        ? { id: this.lastId, kind: this.kind || "message", data: this.data.join("\n") }
        : null;
      this.reset();
      return event;
    }
    if (line.startsWith(":")) return null; // a comment: the server's keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.kind = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return null;
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Follow a session's events after event `after` (null: from its first) until it ends or
 * `signal` aborts. Calls `onOpen()` when the stream is (re)connected and
 * `onEvent({id, kind, record})` for each event; returns "missing" when the controller has
 * no stream endpoint (404/405: poll instead), "ended" after the session's last event,
 * "aborted" when told to stop. Throws an ApiError when the controller refuses the call
 * (a bad token, say).
 */
export async function follow(sessionId, { after = null, onOpen, onEvent, signal }) {
  const url = `/api/v1/sessions/${quote(sessionId)}/events/stream`;
  const parser = new EventParser();
  parser.lastId = after === null ? null : String(after);
  while (!signal.aborted) {
    const headers = authorized({ Accept: "text/event-stream" });
    if (parser.lastId !== null) headers["Last-Event-ID"] = parser.lastId;
    let response;
    try {
      response = await fetch(url, { headers, signal, cache: "no-store" });
    } catch {
      await pause(parser.retry ?? RETRY_MS, signal); // the controller restarts, say
      continue;
    }
    if (response.status === 404 || response.status === 405) return "missing";
    if (!response.ok) throw await failure(response);
    onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    parser.buffer = "";
    parser.reset();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.feed(value)) {
          let record = {};
          try {
            record = JSON.parse(event.data);
          } catch {
            continue; // not an EventRecord: nothing to show
          }
          onEvent({ id: event.id, kind: record.kind || event.kind, record });
          if (SESSION_END.has(event.kind)) {
            await reader.cancel();
            return "ended";
          }
        }
      }
    } catch {
      // the connection broke: open it again below, after the last event seen
    }
    if (!signal.aborted) await pause(parser.retry ?? RETRY_MS, signal);
  }
  return "aborted";
}
