import ts from 'typescript';
import { posix } from 'node:path';

/**
 * Static checks of the code's shape, used by test/shape.test.ts: import cycles between src/ folders, and
 * module-level mutable state. Both work on source text (a TypeScript AST, no type checking), so they can
 * be tried on planted examples.
 */

/** Relative module specifiers a file imports or re-exports (static, `import type` included, and `import('...')`). */
export function importsOf(file: string, source: string): string[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.ES2022, true);
  const out: string[] = [];
  const visit = (n: ts.Node): void => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      out.push(n.moduleSpecifier.text);
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword && n.arguments[0] && ts.isStringLiteral(n.arguments[0])) {
      out.push(n.arguments[0].text);
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      out.push(n.argument.literal.text);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out.filter((s) => s.startsWith('.'));
}

/** The unit of the cycle check: `src/nat/ice.ts` -> `nat`; a file directly in src/ is its own unit (`clock.ts`). */
export function folderOf(file: string): string {
  const parts = file.split('/');
  const i = parts.indexOf('src');
  return parts[i + 1];
}

/** Folder -> folder edges, each with one `from -> to` file pair as the example to show. */
export function folderGraph(files: ReadonlyMap<string, string>): Map<string, Map<string, string>> {
  const g = new Map<string, Map<string, string>>();
  for (const [file, source] of files) {
    const from = folderOf(file);
    for (const spec of importsOf(file, source)) {
      const target = posix.normalize(posix.join(posix.dirname(file), spec)).replace(/\.js$/, '.ts');
      const to = folderOf(target);
      if (to === from) continue;
      let edges = g.get(from);
      if (!edges) g.set(from, (edges = new Map()));
      if (!edges.has(to)) edges.set(to, `${file} -> ${target}`);
    }
  }
  return g;
}

/** Strongly connected components with more than one folder (Tarjan), each sorted; every one is a cycle. */
export function folderCycles(g: ReadonlyMap<string, ReadonlyMap<string, string>>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const out: string[][] = [];
  const strong = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of g.get(v)?.keys() ?? []) {
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1) out.push(comp.sort());
    }
  };
  for (const v of g.keys()) if (!idx.has(v)) strong(v);
  return out;
}

/** The edges inside one cycle, as `a -> b (file -> file)` lines, for the failure message. */
export function describeCycle(g: ReadonlyMap<string, ReadonlyMap<string, string>>, comp: string[]): string[] {
  const inside = new Set(comp);
  const lines: string[] = [];
  for (const a of comp) for (const [b, via] of g.get(a) ?? []) if (inside.has(b)) lines.push(`${a} -> ${b} (${via})`);
  return lines;
}

const COLLECTIONS = new Set(['Map', 'Set', 'WeakMap', 'WeakSet', 'Array', 'Uint8Array', 'Uint16Array', 'Uint32Array', 'Int32Array', 'Float64Array', 'BigUint64Array']);
const MUTATORS = ['set', 'add', 'delete', 'clear', 'push', 'pop', 'shift', 'unshift', 'splice', 'fill', 'sort', 'copyWithin'];

/**
 * Module-level mutable state in one file: every top-level `let`/`var`, and every top-level `const` holding a
 * collection (`new Map/Set/...`, an array literal, a typed array, `Buffer.alloc*`) that the file mutates
 * (calls a mutating method on it or assigns one of its elements). Each finding is `file:line name`.
 */
export function moduleState(file: string, source: string): string[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const at = (n: ts.Node, name: string): string => `${file}:${sf.getLineAndCharacterOfPosition(n.getStart()).line + 1} ${name}`;
  for (const st of sf.statements) {
    if (!ts.isVariableStatement(st)) continue;
    const isConst = (st.declarationList.flags & ts.NodeFlags.Const) !== 0;
    for (const d of st.declarationList.declarations) {
      if (!ts.isIdentifier(d.name)) {
        if (!isConst) found.push(at(d, d.name.getText(sf)));
        continue;
      }
      const name = d.name.text;
      if (!isConst) {
        found.push(at(d, name));
        continue;
      }
      if (d.initializer && isCollection(d.initializer) && isMutated(source, name)) found.push(at(d, name));
    }
  }
  return found;
}

function isCollection(e: ts.Expression): boolean {
  while (ts.isAsExpression(e) || ts.isParenthesizedExpression(e) || ts.isSatisfiesExpression(e)) e = e.expression;
  if (ts.isArrayLiteralExpression(e)) return true;
  if (ts.isNewExpression(e) && ts.isIdentifier(e.expression)) return COLLECTIONS.has(e.expression.text);
  if (ts.isCallExpression(e) && ts.isPropertyAccessExpression(e.expression)) {
    const t = e.expression.getText();
    return /^Buffer\.(alloc|allocUnsafe|allocUnsafeSlow)$/.test(t);
  }
  return false;
}

function isMutated(source: string, name: string): boolean {
  const n = name.replace(/[$]/g, '\\$');
  const call = new RegExp(`(?<![\\w$.])${n}\\.(${MUTATORS.join('|')})\\(`);
  const elem = new RegExp(`(?<![\\w$.])${n}\\[[^\\]]+\\]\\s*(=(?!=)|\\+=|-=|\\+\\+|--)`);
  return call.test(source) || elem.test(source);
}
