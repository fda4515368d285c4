/**
 * The console's page shell and style. The shell holds no data and no inline script or style (the
 * Content-Security-Policy allows only /console/app.js and /console/style.css); app.js builds the views.
 */
export const CONSOLE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lattice console</title>
<link rel="stylesheet" href="/console/style.css">
<script type="module" src="/console/app.js"></script>
</head>
<body>
<header><h1>lattice</h1><nav id="nav"></nav><span id="who"></span></header>
<main id="main"><p>Loading...</p></main>
</body>
</html>
`;

export const CONSOLE_CSS = `
:root { font-family: system-ui, sans-serif; font-size: 14px; color: #1d232a; background: #f6f7f9; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 1.5rem; padding: .5rem 1rem; background: #1d232a; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; }
nav button { background: none; border: 0; color: #cfd6de; padding: .4rem .6rem; cursor: pointer; font-size: .95rem; }
nav button[aria-current="page"] { color: #fff; border-bottom: 2px solid #5aa9ff; }
#who { margin-left: auto; }
#who button { margin-left: .5rem; }
main { padding: 1rem; }
section { background: #fff; border: 1px solid #dde2e8; border-radius: 6px; padding: 1rem; margin-bottom: 1rem; }
h2 { font-size: 1rem; margin: 0 0 .75rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #eef1f4; vertical-align: top; }
th { font-weight: 600; color: #4a5563; }
input, select, textarea, button { font: inherit; }
input, select { padding: .25rem .4rem; }
form.row, .row { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin-bottom: .75rem; }
label { display: flex; flex-direction: column; font-size: .8rem; color: #4a5563; gap: .15rem; }
textarea { width: 100%; min-height: 22rem; font-family: ui-monospace, monospace; font-size: 13px; box-sizing: border-box; }
pre { font-family: ui-monospace, monospace; font-size: 12.5px; background: #f6f7f9; padding: .5rem; overflow: auto; margin: .25rem 0; }
pre .add { color: #0b6b2b; background: #e6f6ea; display: block; }
pre .del { color: #9b1c1c; background: #fbe9e9; display: block; }
pre .ctx { display: block; }
.problems li { color: #9b1c1c; }
.ok { color: #0b6b2b; }
.error { color: #9b1c1c; }
.muted { color: #6b7785; }
#live-list { list-style: none; padding: 0; margin: 0; max-height: 32rem; overflow: auto; font-family: ui-monospace, monospace; font-size: 12.5px; }
#live-list li { padding: .2rem .3rem; border-bottom: 1px solid #eef1f4; }
#live-list li[data-verdict="denied"], #live-list li[data-verdict="would-deny"] { background: #fbe9e9; }
.graph { width: 100%; max-width: 720px; height: auto; border: 1px solid #eef1f4; border-radius: 6px; }
.graph line { stroke: #9fb3c8; stroke-width: 1.5; }
.graph circle { fill: #5aa9ff; stroke: #1d5fa8; }
.graph circle.revoked { fill: #ccc; stroke: #999; }
.graph text { font-size: 11px; fill: #1d232a; }
.card { border: 1px solid #dde2e8; border-radius: 6px; padding: .75rem; margin-bottom: .75rem; }
.signin { max-width: 28rem; }
`;
