/**
 * A JSON syntax error as a person finds it: Node 20's JSON.parse names a character offset ("... in JSON at
 * position 213"); this names the line and column (1-based) of that offset in `text` instead.
 */
export function jsonSyntaxMessage(err: unknown, text: string): string {
  const message = (err as Error).message.split('\n')[0] ?? '';
  const m = / in JSON at position (\d+)/.exec(message);
  if (!m) return message;
  const offset = Number(m[1]);
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const column = offset - before.lastIndexOf('\n');
  return `${message.slice(0, m.index)} at line ${line} column ${column}`;
}
