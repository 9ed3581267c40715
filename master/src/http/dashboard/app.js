// The explore dashboard: plain JavaScript, no framework, no build step, nothing loaded from the
// network but this master's JSON API (docs/http-api.md). Routes live in the URL hash:
//   #/               experiments and workers
//   #/workers        workers and what each runs
//   #/exp/ID?…       one experiment (the trial table's paging, sort and filters are the query)
//   #/trial/ID?exp=E one trial
// Every view re-reads the API every 2 s and re-draws only the sections whose data changed, so
// the user's paging, filters, focus and scroll position survive the updates.
'use strict';

(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = 'explore.token';
  const TRIAL_STATUSES = ['queued', 'leased', 'running', 'completed', 'pruned', 'failed', 'cancelled'];
  const OBJECTIVES = ['plain', 'elr', 'disentangle', 'dann', 'gradient_mixing', 'replay', 'agem'];
  const SORT_KEYS = { seq: 'seq', score: 'score', epochs: 'epochs', params: 'params', created: 'created' };
  const TABLE_DEFAULTS = { offset: 0, limit: 50, sort: 'seq', order: 'desc', status: '', chain: '', objective: '', min_score: '', max_score: '' };
  const PALETTE = ['#1f6fd1', '#d1481f', '#168a52', '#8a3fc4', '#b8860b', '#c2185b', '#00838f', '#5d6d7e'];

  const main = document.getElementById('main');
  const live = document.querySelector('[data-testid="live"]');
  const forgetButton = document.querySelector('[data-testid="forget-token"]');

  // ---------------------------------------------------------------- DOM helpers

  function build(ns, tag, attrs, kids) {
    const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'testid') el.setAttribute('data-testid', v);
      else if (k === 'class') el.setAttribute('class', v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  const h = (tag, attrs, ...kids) => build(null, tag, attrs, kids);
  const SVG = 'http://www.w3.org/2000/svg';
  const s = (tag, attrs, ...kids) => build(SVG, tag, attrs, kids);

  /** Replaces `el`'s children with `render(data)` when `data` differs from the last drawn. */
  const drawn = new WeakMap();
  function draw(el, data, render) {
    const key = JSON.stringify(data);
    if (drawn.get(el) === key) return;
    drawn.set(el, key);
    el.replaceChildren(...[render(data)].flat());
  }

  function section(title, testid, ...extra) {
    const body = h('div', { class: 'section-body', testid: testid + '-body' });
    const el = h('section', { class: 'card', testid, 'aria-label': title },
      h('div', { class: 'card-head' }, h('h2', {}, title), ...extra), body);
    return { el, body };
  }

  // ---------------------------------------------------------------- formatting

  const dash = '—';
  const pct = (x) => (x === null || x === undefined ? dash : (x * 100).toFixed(2) + ' %');
  const num = (x) => (x === null || x === undefined ? dash : Number(x).toLocaleString('en-US'));
  const temp = (x) => (x === null || x === undefined ? dash : Number(x).toPrecision(3));
  function delta(d) {
    if (d === null || d === undefined) return h('span', { class: 'muted' }, dash);
    const pts = d * 100;
    const cls = pts > 0 ? 'up' : pts < 0 ? 'down' : 'muted';
    return h('span', { class: cls }, (pts > 0 ? '+' : pts < 0 ? '−' : '±') + Math.abs(pts).toFixed(2) + ' pt');
  }
  function duration(ms) {
    if (ms === null || ms === undefined || ms < 0) return dash;
    const sec = Math.round(ms / 1000);
    if (sec < 60) return sec + ' s';
    const min = Math.floor(sec / 60);
    if (min < 60) return min + ' min ' + String(sec % 60).padStart(2, '0') + ' s';
    return Math.floor(min / 60) + ' h ' + String(min % 60).padStart(2, '0') + ' min';
  }
  const clock = (ms) => (ms ? new Date(ms).toLocaleString() : dash);
  /** The time of day for today, else the date: for table cells. */
  function shortClock(ms) {
    if (!ms) return dash;
    const d = new Date(ms);
    return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleDateString();
  }
  const shortId = (id) => (id ? (id.length > 14 ? id.slice(0, 14) + '…' : id) : dash);
  const badge = (text, kind) => h('span', { class: 'badge badge-' + (kind || text) }, text);
  const yesNo = (v, yes, no) => (v === null || v === undefined ? h('span', { class: 'muted' }, 'pending') : v ? badge(yes, 'yes') : badge(no, 'no'));
  const trialHref = (id, exp) => '#/trial/' + encodeURIComponent(id) + (exp ? '?exp=' + encodeURIComponent(exp) : '');
  const expHref = (id) => '#/exp/' + encodeURIComponent(id);

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path, options) {
    let res;
    try {
      res = await fetch('/api/v1' + path, { headers: { Accept: 'application/json' }, cache: 'no-store', ...options });
    } catch (e) {
      throw new ApiError(0, 'network', 'the master cannot be reached (' + e.message + ')');
    }
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) {
      const err = (body && body.error) || {};
      throw new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText);
    }
    return body;
  }

  const errorText = (e) => (e.status ? `${e.status} ${e.code}: ${e.message}` : e.message);

  // ---------------------------------------------------------------- token and write actions

  function storedToken() {
    try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (_) { return ''; }
  }
  function storeToken(token) {
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_) { /* storage disabled: ask every time */ }
    forgetButton.hidden = !storedToken();
  }
  forgetButton.addEventListener('click', () => storeToken(''));
  forgetButton.hidden = !storedToken();

  /** The saved token, or asks for it once; null when the user cancels. */
  function askToken() {
    const saved = storedToken();
    if (saved) return Promise.resolve(saved);
    const dialog = document.getElementById('token-dialog');
    const input = document.getElementById('token-input');
    input.value = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => {
        const token = input.value.trim();
        if (dialog.returnValue === 'ok' && token) {
          storeToken(token);
          resolve(token);
        } else resolve(null);
      }, { once: true });
      dialog.returnValue = '';
      dialog.showModal();
      input.focus();
    });
  }

  /** POSTs a write action with the token; a 401 forgets the saved token. */
  async function act(path) {
    const token = await askToken();
    if (!token) return null;
    try {
      return await api(path, { method: 'POST', headers: { Accept: 'application/json', Authorization: 'Bearer ' + token } });
    } catch (e) {
      if (e.status === 401) storeToken('');
      throw e;
    }
  }

  // ---------------------------------------------------------------- charts

  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((v) => v >= raw) || raw;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
    return ticks;
  }

  /**
   * A line chart as SVG. series: [{name, points: [[x, y], …]}]; step draws each value until
   * the next point (a best-so-far curve); yLog plots log10(y).
   */
  function lineChart({ series, testid, label, xLabel, yLabel, xFmt = String, yFmt = String, step = false, yLog = false, yRange }) {
    const W = 640, H = 260, L = 62, R = 30, T = 14, B = 42;
    const all = series.flatMap((sr) => sr.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!yLog || y > 0));
    const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': label, testid },
      s('title', {}, label));
    if (all.length === 0) {
      svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No data yet'));
      return svg;
    }
    const fy = yLog ? (y) => Math.log10(y) : (y) => y;
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = yRange || [Math.min(...all.map((p) => fy(p[1]))), Math.max(...all.map((p) => fy(p[1])))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const pad = Math.abs(y0) * 0.05 || 0.05; y0 -= pad; y1 += pad; } else if (!yRange) {
      const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
    }
    const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const py = (y) => T + (1 - (fy(y) - y0) / (y1 - y0)) * (H - T - B);
    const grid = s('g', { class: 'grid' });
    for (const t of niceTicks(x0, x1, 6)) {
      grid.append(s('line', { x1: px(t), x2: px(t), y1: T, y2: H - B }),
        s('text', { x: px(t), y: H - B + 16, 'text-anchor': 'middle' }, xFmt(t)));
    }
    const yTicks = yLog
      ? niceTicks(y0, y1, 4).map((e) => Math.pow(10, e))
      : niceTicks(y0, y1, 5);
    for (const t of yTicks) {
      grid.append(s('line', { x1: L, x2: W - R, y1: py(t), y2: py(t) }),
        s('text', { x: L - 6, y: py(t) + 4, 'text-anchor': 'end' }, yFmt(t)));
    }
    svg.append(grid,
      s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }),
      s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }),
      s('text', { class: 'axis-label', x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle' }, xLabel),
      s('text', { class: 'axis-label', x: 12, y: (T + H - B) / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel));
    series.forEach((sr, i) => {
      const pts = sr.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!yLog || y > 0));
      if (pts.length === 0) return;
      const color = sr.color || PALETTE[i % PALETTE.length];
      let d = '';
      pts.forEach(([x, y], j) => {
        if (j === 0) d += `M${px(x).toFixed(1)},${py(y).toFixed(1)}`;
        else if (step) d += `H${px(x).toFixed(1)}V${py(y).toFixed(1)}`;
        else d += `L${px(x).toFixed(1)},${py(y).toFixed(1)}`;
      });
      if (pts.length === 1) d += 'h0.01';
      svg.append(s('path', { d, class: 'line', stroke: color, testid: testid + '-line', 'data-series': sr.name }));
      const marks = sr.marks || (pts.length <= 60 ? pts : []);
      for (const p of marks) {
        svg.append(s('circle', { cx: px(p[0]), cy: py(p[1]), r: 3, fill: color },
          s('title', {}, p[2] || `${sr.name}: ${xFmt(p[0])}, ${yFmt(p[1])}`)));
      }
    });
    if (series.length > 1) {
      const legend = h('ul', { class: 'legend' },
        series.map((sr, i) => h('li', {}, h('span', { class: 'swatch', style: `background:${sr.color || PALETTE[i % PALETTE.length]}` }), sr.name)));
      return h('figure', { class: 'chart-wrap' }, svg, legend);
    }
    return svg;
  }

  const minutes = (ms) => ms / 60000;
  const fmtMin = (m) => (Math.abs(m) >= 2 ? +m.toFixed(1) + ' min' : +(m * 60).toPrecision(3) + ' s');

  // ---------------------------------------------------------------- views

  /** Experiments and workers (the home page). */
  function homeView() {
    const exps = section('Experiments', 'experiments');
    const workers = section('Workers', 'workers');
    main.replaceChildren(h('h1', { class: 'sr-only' }, 'Overview'), exps.el, workers.el);
    return {
      title: 'Experiments',
      async refresh() {
        const [e, w] = await Promise.all([api('/experiments'), api('/workers')]);
        const tick = e.experiments.some((x) => x.status === 'running') ? Math.floor(Date.now() / 1000) : 0;
        draw(exps.body, { e, tick }, () => renderExperiments(e));
        draw(workers.body, w, renderWorkers);
      },
    };
  }

  function workersView() {
    const workers = section('Workers', 'workers');
    main.replaceChildren(h('h1', {}, 'Workers'), workers.el);
    return {
      title: 'Workers',
      async refresh() { draw(workers.body, await api('/workers'), renderWorkers); },
    };
  }

  const finishedCount = (t) => (t.completed || 0) + (t.pruned || 0) + (t.failed || 0) + (t.cancelled || 0);
  const elapsed = (e) => (e.finished_at_ms || Date.now()) - e.created_at_ms;

  function budget(value, max, fmt) {
    const text = fmt(value) + (max ? ' / ' + fmt(max) : '');
    if (!max) return text;
    return h('span', { class: 'budget' }, h('progress', { max, value: Math.min(value, max), 'aria-label': text }), text);
  }

  function statusCell(e) {
    return [badge(e.status), e.status_reason ? h('div', { class: 'reason' }, e.status_reason) : null];
  }

  function renderExperiments({ experiments }) {
    if (!experiments.length) return h('p', { class: 'muted' }, 'No experiments yet: submit one with `master submit spec.toml`.');
    return h('div', { class: 'scroll' }, h('table', { testid: 'experiments-table' },
      h('thead', {}, h('tr', {}, ['Name', 'Status', 'Trials', 'Epochs', 'Wall time', 'Best score', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, experiments.map((e) => h('tr', { testid: 'experiment-row', 'data-id': e.id, 'data-status': e.status },
        h('td', {}, h('a', { href: expHref(e.id), testid: 'experiment-link' }, e.name || e.id), h('div', { class: 'muted small' }, e.id)),
        h('td', { testid: 'experiment-status' }, statusCell(e)),
        h('td', {}, budget(finishedCount(e.trials), e.max_trials, num),
          h('div', { class: 'muted small' }, `${e.trials.running + e.trials.leased} running, ${e.trials.queued} queued`)),
        h('td', {}, budget(e.epochs_spent, e.max_epochs, num)),
        h('td', {}, budget(elapsed(e) / 1000, e.max_wall_seconds, (v) => duration(v * 1000))),
        h('td', { testid: 'experiment-best' }, e.best_trial_id ? h('a', { href: trialHref(e.best_trial_id, e.id) }, pct(e.best_score)) : pct(e.best_score),
          e.best_test_accuracy !== null && e.best_test_accuracy !== undefined ? h('div', { class: 'muted small' }, 'test ' + pct(e.best_test_accuracy)) : null),
        h('td', {}, clock(e.created_at_ms)))))));
  }

  function workerTrials(w) {
    if (!(w.trials || []).length) return h('span', { class: 'muted' }, 'idle');
    return h('ul', { class: 'plain' }, w.trials.map((t) => h('li', { testid: 'worker-trial' },
      h('a', { href: trialHref(t.trial_id, t.experiment_id) }, shortId(t.trial_id)), ' ', badge(t.status),
      t.epoch !== null && t.epoch !== undefined ? ` epoch ${t.epoch}` : '', ' · ',
      h('a', { href: expHref(t.experiment_id), class: 'muted' }, shortId(t.experiment_id)))));
  }

  function renderWorkers({ workers }) {
    if (!workers.length) return h('p', { class: 'muted' }, 'No worker has joined yet: start one with `worker join`.');
    const rows = workers.map((w) => h('tr', { testid: 'worker-row', 'data-id': w.id },
      h('td', {}, w.name || w.id, h('div', { class: 'muted small' }, w.id)),
      h('td', {}, w.device || dash),
      h('td', { class: 'num' }, num(w.slots)),
      h('td', {}, w.active ? badge('active', 'yes') : badge('gone', 'no'), h('div', { class: 'muted small' }, 'seen ' + clock(w.last_seen_ms))),
      h('td', {}, workerTrials(w))));
    return h('div', { class: 'scroll' }, h('table', { testid: 'workers-table' },
      h('thead', {}, h('tr', {}, ['Worker', 'Device', 'Slots', 'State', 'Running'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)));
  }

  // ------------------------------------------------ experiment page

  function experimentView(id, query) {
    const table = { ...TABLE_DEFAULTS };
    for (const k of Object.keys(TABLE_DEFAULTS)) if (query.has(k)) table[k] = query.get(k);
    table.offset = Math.max(0, parseInt(table.offset, 10) || 0);
    table.limit = Math.min(500, Math.max(1, parseInt(table.limit, 10) || 50));
    let xAxis = query.get('x') === 'time' ? 'time' : 'trials';
    let genealogyLimit = parseInt(query.get('tree'), 10) || 60;
    let experiment = null;
    let lastBest = null;
    let trialsSeq = 0;

    const title = h('h1', { testid: 'experiment-title' }, id);
    const summary = h('div', { class: 'summary', testid: 'experiment-summary' });
    const actions = h('div', { class: 'actions', testid: 'experiment-actions' });
    const message = h('div', { class: 'message', role: 'alert', testid: 'action-message' });

    const toggle = h('div', { class: 'toggle', role: 'group', 'aria-label': 'Horizontal axis' },
      ['trials', 'time'].map((k) => h('button', { type: 'button', testid: 'best-x-' + k, 'aria-pressed': String(xAxis === k), onclick: () => {
        xAxis = k;
        toggle.querySelectorAll('button').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.testid === 'best-x-' + k)));
        saveQuery();
        if (lastBest) draw(best.body, { b: lastBest, xAxis }, renderBest);
      } }, k === 'trials' ? 'against trials' : 'against time')));
    const best = section('Best score so far', 'best', toggle);

    const trials = section('Trials', 'trials');
    const filters = filterForm();
    const trialsError = h('div', { class: 'message error', role: 'alert', testid: 'trials-error' });
    const trialsTable = h('div', { class: 'scroll', testid: 'trials-table-wrap' });
    const pager = h('nav', { class: 'pager', 'aria-label': 'Trial pages', testid: 'pager' });
    trials.body.append(filters, trialsError, trialsTable, pager);

    const limitSelect = h('select', { 'aria-label': 'How many best trials', testid: 'genealogy-limit', onchange: () => {
      genealogyLimit = parseInt(limitSelect.value, 10);
      saveQuery();
      refreshGenealogy().catch(showError);
    } }, [20, 60, 200, 500].map((n) => h('option', { value: n, selected: n === genealogyLimit }, `best ${n}`)));
    const genealogy = section('Genealogy', 'genealogy', limitSelect);
    const chains = section('Annealing chains', 'chains');

    main.replaceChildren(h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Experiments'), ' / '), title,
      h('div', { class: 'head-row' }, summary, actions), message,
      h('div', { class: 'grid2' }, best.el, chains.el), trials.el, genealogy.el);

    const q = (o) => new URLSearchParams(Object.entries(o).filter(([, v]) => v !== '' && v !== null && v !== undefined)).toString();

    function saveQuery() {
      const o = {};
      for (const [k, v] of Object.entries(table)) if (String(v) !== String(TABLE_DEFAULTS[k])) o[k] = v;
      if (xAxis !== 'trials') o.x = xAxis;
      if (genealogyLimit !== 60) o.tree = genealogyLimit;
      const qs = q(o);
      history.replaceState(null, '', expHref(id) + (qs ? '?' + qs : ''));
    }

    function showError(e) {
      message.className = 'message error';
      message.textContent = errorText(e);
    }

    function filterForm() {
      const field = (label, input) => h('label', { class: 'field' }, h('span', {}, label), input);
      const inputs = {
        status: h('select', { name: 'status', testid: 'filter-status' }, h('option', { value: '' }, 'any'),
          TRIAL_STATUSES.map((v) => h('option', { value: v, selected: table.status === v }, v))),
        chain: h('input', { name: 'chain', type: 'number', min: 0, step: 1, inputmode: 'numeric', value: table.chain, testid: 'filter-chain', placeholder: 'any' }),
        objective: h('select', { name: 'objective', testid: 'filter-objective' }, h('option', { value: '' }, 'any'),
          OBJECTIVES.map((v) => h('option', { value: v, selected: table.objective === v }, v))),
        min_score: h('input', { name: 'min_score', type: 'number', min: 0, max: 1, step: 'any', value: table.min_score, testid: 'filter-min-score', placeholder: '0' }),
        max_score: h('input', { name: 'max_score', type: 'number', min: 0, max: 1, step: 'any', value: table.max_score, testid: 'filter-max-score', placeholder: '1' }),
      };
      let timer = null;
      const apply = () => {
        clearTimeout(timer);
        for (const [k, el] of Object.entries(inputs)) table[k] = el.value.trim();
        table.offset = 0;
        saveQuery();
        refreshTrials().catch(() => {});
      };
      for (const el of Object.values(inputs)) {
        el.addEventListener('change', apply);
        el.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(apply, 400); });
      }
      const reset = h('button', { type: 'button', testid: 'filter-reset', onclick: () => {
        for (const [k, el] of Object.entries(inputs)) el.value = TABLE_DEFAULTS[k];
        apply();
      } }, 'Clear filters');
      return h('form', { class: 'filters', testid: 'trial-filters', onsubmit: (ev) => { ev.preventDefault(); apply(); } },
        field('Status', inputs.status), field('Chain', inputs.chain), field('Objective', inputs.objective),
        field('Min score (0–1)', inputs.min_score), field('Max score (0–1)', inputs.max_score), reset);
    }

    async function refreshTrials() {
      const seq = ++trialsSeq;
      const { offset, limit, sort, order, status, chain, objective, min_score, max_score } = table;
      let page;
      try {
        page = await api(`/experiments/${encodeURIComponent(id)}/trials?` + q({ offset, limit, sort, order, status, chain, objective, min_score, max_score }));
      } catch (e) {
        if (seq !== trialsSeq) return;
        if (e.status === 400) { trialsError.textContent = errorText(e); return; }
        throw e;
      }
      if (seq !== trialsSeq) return; // a newer request (the user changed the table) answers instead
      trialsError.textContent = '';
      if (page.total > 0 && table.offset >= page.total) {
        table.offset = Math.floor((page.total - 1) / table.limit) * table.limit;
        saveQuery();
        return refreshTrials();
      }
      draw(trialsTable, { page, sort, order }, renderTrialTable);
      draw(pager, { total: page.total, offset: table.offset, limit: table.limit }, renderPager);
    }

    function setSort(key) {
      if (table.sort === key) table.order = table.order === 'desc' ? 'asc' : 'desc';
      else { table.sort = key; table.order = key === 'seq' || key === 'created' || key === 'score' ? 'desc' : 'asc'; }
      table.offset = 0;
      saveQuery();
      refreshTrials().catch(showError);
    }

    function renderTrialTable({ page, sort, order }) {
      const cols = [['#', 'seq'], ['Status', 'status'], ['Chain', 'chain'], ['Objective', 'objective'], ['Score', 'score'], ['Test'], ['Epochs', 'epochs'], ['Params', 'params'],
        ['Temp.'], ['Accepted'], ['Mutation'], ['Created', 'created'], ['Duration']];
      const head = h('tr', {}, cols.map(([label, key]) => {
        if (!key) return h('th', { scope: 'col' }, label);
        const active = sort === key;
        return h('th', { scope: 'col', 'aria-sort': active ? (order === 'asc' ? 'ascending' : 'descending') : 'none', class: active ? 'sorted' : '' },
          h('button', { type: 'button', class: 'sort', testid: 'sort-' + key, onclick: () => setSort(key) },
            label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, active ? (order === 'asc' ? ' ▲' : ' ▼') : ' ↕')));
      }));
      const rows = page.trials.map((t) => h('tr', { testid: 'trial-row', 'data-id': t.id, 'data-seq': t.seq, 'data-score': t.score ?? '' },
        h('td', { class: 'num' }, h('a', { href: trialHref(t.id, id), testid: 'trial-link' }, '#' + t.seq)),
        h('td', {}, badge(t.status), t.error ? h('div', { class: 'reason', title: t.error }, t.error) : null),
        h('td', { class: 'num' }, t.chain ?? dash),
        h('td', {}, t.objective || dash),
        h('td', { class: 'num', testid: 'trial-score' }, pct(t.score)),
        h('td', { class: 'num' }, pct(t.test_accuracy)),
        h('td', { class: 'num' }, num(t.epochs_run)),
        h('td', { class: 'num' }, num(t.params)),
        h('td', { class: 'num' }, temp(t.temperature)),
        h('td', { class: 'nowrap' }, yesNo(t.accepted, 'yes', 'no'), ' ', t.inherit_from ? h('span', { class: 'badge badge-inherit', title: 'started from its parent\'s weights ' + t.inherit_from }, 'inherited') : null),
        h('td', { class: 'origin', title: t.origin || '' }, t.origin || dash),
        h('td', { class: 'small nowrap', title: clock(t.created_at_ms) }, shortClock(t.created_at_ms)),
        h('td', { class: 'num' }, t.started_at_ms ? duration((t.finished_at_ms || Date.now()) - t.started_at_ms) : dash)));
      if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: cols.length, class: 'muted' }, 'No trial matches.')));
      return h('table', { testid: 'trials-table', class: 'trials' }, h('thead', {}, head), h('tbody', {}, rows));
    }

    function renderPager({ total, offset, limit }) {
      const last = total > 0 ? Math.floor((total - 1) / limit) * limit : 0;
      const go = (o) => () => { table.offset = Math.max(0, Math.min(o, last)); saveQuery(); refreshTrials().catch(showError); };
      const btn = (label, testid, o, disabled) => h('button', { type: 'button', testid, disabled, onclick: go(o) }, label);
      const size = h('select', { 'aria-label': 'Rows per page', testid: 'page-size', onchange: () => {
        table.limit = parseInt(size.value, 10);
        table.offset = 0;
        saveQuery();
        refreshTrials().catch(showError);
      } }, [...new Set([25, 50, 100, 200, 500, limit])].sort((a, b) => a - b).map((n) => h('option', { value: n, selected: n === limit }, `${n} per page`)));
      const page = Math.floor(offset / limit) + 1;
      const pages = Math.max(1, Math.ceil(total / limit));
      return [
        btn('« First', 'page-first', 0, offset === 0), btn('‹ Prev', 'page-prev', offset - limit, offset === 0),
        h('span', { class: 'range', testid: 'trials-range', 'data-total': total },
          total ? `${num(offset + 1)}–${num(Math.min(offset + limit, total))} of ${num(total)} trials · page ${num(page)} of ${num(pages)}` : '0 trials'),
        btn('Next ›', 'page-next', offset + limit, offset + limit >= total), btn('Last »', 'page-last', last, offset >= last), size,
      ];
    }

    function renderSummary(e) {
      return [
        h('dl', { class: 'facts' },
          h('div', {}, h('dt', {}, 'Status'), h('dd', { testid: 'experiment-status' }, statusCell(e))),
          h('div', {}, h('dt', {}, 'Trials'), h('dd', {}, budget(finishedCount(e.trials), e.max_trials, num),
            h('div', { class: 'muted small' }, TRIAL_STATUSES.filter((k) => e.trials[k]).map((k) => `${e.trials[k]} ${k}`).join(', ') || 'none yet'))),
          h('div', {}, h('dt', {}, 'Epochs'), h('dd', {}, budget(e.epochs_spent, e.max_epochs, num))),
          h('div', {}, h('dt', {}, 'Wall time'), h('dd', {}, budget(elapsed(e) / 1000, e.max_wall_seconds, (v) => duration(v * 1000)))),
          h('div', {}, h('dt', {}, 'Best score'), h('dd', { testid: 'experiment-best' },
            e.best_trial_id ? h('a', { href: trialHref(e.best_trial_id, id) }, pct(e.best_score)) : pct(e.best_score),
            e.best_test_accuracy !== null && e.best_test_accuracy !== undefined ? h('div', { class: 'muted small' }, 'test ' + pct(e.best_test_accuracy)) : null)),
          h('div', {}, h('dt', {}, 'Created'), h('dd', {}, clock(e.created_at_ms)))),
      ];
    }

    function renderActions({ status }) {
      const run = (label, path, done) => async (ev) => {
        const button = ev.currentTarget;
        if (path.endsWith('now=true') && !confirm('Stop now: cancel the running trials of this experiment?')) return;
        button.disabled = true;
        message.className = 'message';
        message.textContent = '';
        try {
          const answer = await act(path);
          if (answer) {
            message.className = 'message ok';
            message.textContent = done;
            if (answer.id) { experiment = answer; draw(summary, answer, renderSummary); draw(actions, { status: answer.status }, renderActions); }
            await refresh();
          }
        } catch (e) {
          message.className = 'message error';
          message.textContent = e.status === 401
            ? `Not allowed (${errorText(e)}). The saved token was forgotten; the next action asks for it again.`
            : `${label} failed (${errorText(e)}).`;
        } finally {
          button.disabled = false;
        }
      };
      const base = `/experiments/${encodeURIComponent(id)}`;
      if (status === 'running') {
        return [
          h('button', { type: 'button', testid: 'stop', title: 'No new trials; running ones finish', onclick: run('Stop', base + '/stop?now=false', 'Stopped: no new trials; the running ones finish.') }, 'Stop'),
          h('button', { type: 'button', class: 'danger', testid: 'stop-now', title: 'No new trials; running ones are cancelled', onclick: run('Stop now', base + '/stop?now=true', 'Stopped now: the running trials were cancelled.') }, 'Stop now'),
        ];
      }
      if (status === 'stopped') {
        return h('button', { type: 'button', class: 'primary', testid: 'resume', onclick: run('Resume', base + '/resume', 'Resumed.') }, 'Resume');
      }
      return [];
    }

    function renderBest({ b, xAxis: axis }) {
      const start = experiment ? experiment.created_at_ms : (b.points[0] || {}).at_ms || 0;
      const end = experiment && experiment.finished_at_ms ? experiment.finished_at_ms : b.now_ms + (Date.now() - b.fetched);
      const x = (p) => (axis === 'time' ? minutes(p.at_ms - start) : p.finished);
      const points = b.points.map((p) => [x(p), p.score, `trial ${p.trial_id}: ${pct(p.score)} after ${p.finished} finished trials`]);
      const marks = points.slice();
      if (points.length) points.push([axis === 'time' ? minutes(end - start) : b.finished, points[points.length - 1][1]]);
      return [lineChart({
        series: [{ name: 'best score', points, marks }], step: true, testid: 'best-chart',
        label: `Best validation accuracy so far against ${axis === 'time' ? 'time' : 'finished trials'}`,
        xLabel: axis === 'time' ? 'time since submission' : 'finished trials', yLabel: 'best val. accuracy',
        xFmt: axis === 'time' ? fmtMin : (v) => num(v), yFmt: (v) => (v * 100).toFixed(1) + '%',
      }), h('p', { class: 'muted small' }, `${b.points.length} improvements over ${num(b.finished)} finished trials`)];
    }

    function renderChains({ chains: list, history: hist }) {
      const start = experiment ? experiment.created_at_ms : Math.min(...hist.map((p) => p.at_ms));
      const byChain = new Map();
      for (const p of hist) {
        if (!byChain.has(p.chain)) byChain.set(p.chain, []);
        byChain.get(p.chain).push([minutes(p.at_ms - start), p.temperature, `chain ${p.chain}, trial #${p.seq}: T = ${temp(p.temperature)}`]);
      }
      const series = [...byChain.keys()].sort((a, b) => a - b).map((c) => ({ name: 'chain ' + c, points: byChain.get(c).sort((a, b) => a[0] - b[0]) }));
      const temps = hist.map((p) => p.temperature).filter((t) => t > 0);
      const yLog = temps.length > 1 && Math.max(...temps) / Math.min(...temps) > 20;
      return [
        lineChart({ series, testid: 'chains-chart', label: 'Temperature of each annealing chain over time', xLabel: 'time since submission',
          yLabel: 'temperature' + (yLog ? ' (log)' : ''), xFmt: fmtMin, yFmt: temp, yLog }),
        h('div', { class: 'scroll' }, h('table', { testid: 'chains-table', class: 'compact' },
          h('thead', {}, h('tr', {}, ['Chain', 'T', 'Current', 'Best', 'Results', 'Accepted', 'Reheats'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, list.map((c) => h('tr', { testid: 'chain-row' },
            h('td', { class: 'num' }, c.chain), h('td', { class: 'num' }, temp(c.temperature)),
            h('td', {}, c.current_trial_id ? h('a', { href: trialHref(c.current_trial_id, id) }, shortId(c.current_trial_id)) : dash),
            h('td', { class: 'num' }, pct(c.best_score)), h('td', { class: 'num' }, num(c.results)),
            h('td', { class: 'num' }, num(c.accepted)), h('td', { class: 'num' }, num(c.reheats))))))),
      ];
    }

    function renderGenealogy({ nodes }) {
      if (!nodes.length) return h('p', { class: 'muted' }, 'No trial yet.');
      const byId = new Map(nodes.map((n) => [n.id, n]));
      const kids = new Map();
      const roots = [];
      for (const n of nodes) {
        if (n.parent_id && byId.has(n.parent_id)) {
          if (!kids.has(n.parent_id)) kids.set(n.parent_id, []);
          kids.get(n.parent_id).push(n);
        } else roots.push(n);
      }
      for (const list of kids.values()) list.sort((a, b) => a.seq - b.seq);
      roots.sort((a, b) => a.seq - b.seq);
      const bestId = experiment && experiment.best_trial_id;
      const item = (n, cont) => h('li', { testid: 'genealogy-node', 'data-id': n.id, class: (cont ? 'cont ' : '') + (n.id === bestId ? 'best' : '') },
        h('div', { class: 'node' },
          cont ? h('span', { class: 'arrow', 'aria-hidden': 'true' }, '↳') : null,
          h('a', { href: trialHref(n.id, id) }, '#' + n.seq),
          h('span', { class: 'num' }, pct(n.score)), delta(n.delta),
          n.accepted === true ? badge('accepted', 'yes') : n.accepted === false ? badge('rejected', 'no') : null,
          n.inherited ? badge('inherited weights', 'inherit') : null,
          n.status !== 'completed' ? badge(n.status) : null,
          n.chain !== null && n.chain !== undefined ? h('span', { class: 'muted small' }, 'chain ' + n.chain) : null,
          n.id === bestId ? badge('best', 'best') : null,
          h('span', { class: 'origin', title: n.origin || '' }, n.origin || 'seed')));
      // A node with one child continues on the same level (a chain of mutations reads top to
      // bottom); a node with several children opens one indented branch per child.
      const run = (n) => {
        const out = [item(n, false)];
        let cur = n;
        while ((kids.get(cur.id) || []).length === 1) {
          cur = kids.get(cur.id)[0];
          out.push(item(cur, true));
        }
        const branches = kids.get(cur.id) || [];
        if (branches.length) out[out.length - 1].append(h('ul', { class: 'tree' }, branches.map(run)));
        return out;
      };
      return [
        h('p', { class: 'muted small' }, `${nodes.length} trials: the best and their ancestors. ↳ marks a child of the line above; branches are indented.`),
        h('ul', { class: 'tree root', testid: 'genealogy-tree' }, roots.map(run)),
      ];
    }

    async function refreshGenealogy() {
      draw(genealogy.body, { g: await api(`/experiments/${encodeURIComponent(id)}/genealogy?limit=${genealogyLimit}`), best: experiment && experiment.best_trial_id }, ({ g }) => renderGenealogy(g));
    }

    // The best curve, the genealogy and the chains change only when a trial is proposed or
    // finishes, and the table's rows only then or while trials run: with a large pool those
    // reads are skipped while the experiment's counts stand still (and redone every 30 s).
    let lastVersion = '';
    let lastFull = 0;

    async function refresh() {
      const base = `/experiments/${encodeURIComponent(id)}`;
      const e = await api(base);
      experiment = e;
      draw(title, { name: e.name, id: e.id }, () => [e.name || e.id, h('span', { class: 'muted small id' }, e.id)]);
      document.title = `${e.name || e.id} · explore`;
      const running = e.status === 'running';
      draw(summary, { e, tick: running ? Math.floor(Date.now() / 1000) : 0 }, () => renderSummary(e));
      draw(actions, { status: e.status }, renderActions);
      const version = JSON.stringify([e.status, e.trials, e.best_trial_id, e.finished_at_ms]);
      const full = version !== lastVersion || Date.now() - lastFull > 30000;
      const busy = e.trials.running + e.trials.leased > 0;
      const jobs = [full || busy ? refreshTrials() : null];
      if (full) {
        lastVersion = version;
        lastFull = Date.now();
        jobs.push(api(base + '/best').then((b) => { lastBest = { ...b, fetched: Date.now() }; }),
          api(base + '/chains').then((c) => draw(chains.body, { c, created: e.created_at_ms }, ({ c: cc }) => renderChains(cc))),
          refreshGenealogy());
      }
      await Promise.all(jobs);
      if (lastBest) {
        const tick = running && xAxis === 'time' ? Math.floor(Date.now() / 2000) : 0;
        draw(best.body, { b: lastBest, xAxis, created: e.created_at_ms, finished: e.finished_at_ms, tick }, renderBest);
      }
    }

    return { title: id, refresh };
  }

  // ------------------------------------------------ trial page

  function trialView(id, query) {
    const exp = query.get('exp');
    const crumbs = h('p', { class: 'crumbs' });
    const title = h('h1', { testid: 'trial-title' }, 'Trial');
    const facts = h('div', { testid: 'trial-facts' });
    const curve = section('Learning curve', 'learning-curve');
    const epochs = section('Epochs', 'epochs');
    const hparams = section('Hyperparameters', 'hparams');
    const genome = section('Genome', 'genome');
    const lineage = section('Lineage', 'lineage');
    main.replaceChildren(crumbs, title, facts, h('div', { class: 'grid2' }, curve.el, lineage.el), epochs.el,
      h('div', { class: 'grid2' }, hparams.el, genome.el));

    function renderFacts(t) {
      const row = (label, value, testid) => h('div', {}, h('dt', {}, label), h('dd', { testid }, value));
      return h('dl', { class: 'facts' },
        row('Status', [badge(t.status), t.error ? h('div', { class: 'reason' }, t.error) : null], 'trial-status'),
        row('Score (val.)', pct(t.score), 'trial-score'), row('Test accuracy', pct(t.test_accuracy)),
        row('Epochs', num(t.epochs_run)), row('Parameters', num(t.params)), row('FLOPs', num(t.flops)),
        row('Objective', t.objective || dash), row('Chain', t.chain ?? dash), row('Temperature', temp(t.temperature)),
        row('Accepted', yesNo(t.accepted, 'accepted', 'rejected')),
        row('Parent', t.parent_id ? h('a', { href: trialHref(t.parent_id, exp || t.experiment_id), testid: 'parent-link', title: t.parent_id }, t.parent_seq !== null ? '#' + t.parent_seq : shortId(t.parent_id)) : 'seed'),
        row('Weights', t.inherit_from ? h('span', { title: t.inherit_from }, 'inherited from the parent (' + t.inherit_from.slice(0, 12) + '…)') : 'fresh'),
        row('Mutation', t.origin || dash), row('Worker', t.worker_id || dash), row('Attempt', num(t.attempt)), row('Kind', t.kind || 'train'),
        t.predicted_score !== null && t.predicted_score !== undefined ? row('Predicted', pct(t.predicted_score)) : null,
        row('Created', clock(t.created_at_ms)), row('Started', clock(t.started_at_ms)),
        row('Finished', clock(t.finished_at_ms)), row('Duration', t.started_at_ms ? duration((t.finished_at_ms || Date.now()) - t.started_at_ms) : dash));
    }

    function renderCurve(list) {
      if (!list.length) return h('p', { class: 'muted' }, 'No epoch reported yet.');
      const val = list.map((e) => [e.epoch, e.val_accuracy]);
      const loss = list.map((e) => [e.epoch, e.train_loss]);
      const xFmt = (v) => (Number.isInteger(v) ? String(v) : '');
      return h('div', { class: 'curves' },
        lineChart({ series: [{ name: 'validation accuracy', points: val }], testid: 'curve-val', label: 'Validation accuracy per epoch',
          xLabel: 'epoch', yLabel: 'val. accuracy', xFmt, yFmt: (v) => (v * 100).toFixed(1) + '%' }),
        lineChart({ series: [{ name: 'training loss', points: loss, color: PALETTE[1] }], testid: 'curve-loss', label: 'Training loss per epoch',
          xLabel: 'epoch', yLabel: 'train loss', xFmt, yFmt: (v) => +v.toPrecision(3) }));
    }

    function renderEpochs(list) {
      if (!list.length) return h('p', { class: 'muted' }, 'No epoch reported yet.');
      const names = [...new Set(list.flatMap((e) => Object.keys(e.metrics || {})))].sort();
      return h('div', { class: 'scroll' }, h('table', { class: 'compact', testid: 'epochs-table' },
        h('thead', {}, h('tr', {}, ['Epoch', 'Val. accuracy', 'Train loss', ...names].map((c) => h('th', { scope: 'col', class: 'num' }, c)))),
        h('tbody', {}, list.map((e) => h('tr', { testid: 'epoch-row' }, h('td', { class: 'num' }, e.epoch), h('td', { class: 'num' }, pct(e.val_accuracy)),
          h('td', { class: 'num' }, e.train_loss === null || e.train_loss === undefined ? dash : (+e.train_loss).toPrecision(4)),
          names.map((n) => h('td', { class: 'num' }, e.metrics && e.metrics[n] !== undefined && e.metrics[n] !== null ? (+e.metrics[n]).toPrecision(4) : dash)))))));
    }

    function flatten(obj, prefix, out) {
      for (const [k, v] of Object.entries(obj || {})) {
        const key = prefix ? prefix + '.' + k : k;
        if (v && typeof v === 'object' && !Array.isArray(v)) flatten(v, key, out);
        else out.push([key, Array.isArray(v) ? JSON.stringify(v) : String(v)]);
      }
      return out;
    }

    function renderLineage({ list, expId }) {
      if (!list.length) return h('p', { class: 'muted' }, 'A seed: no ancestors.');
      return [h('p', { class: 'muted small' }, 'From its parent back to its seed.'),
        h('ol', { class: 'lineage', testid: 'lineage-list' }, list.map((a) => h('li', { testid: 'lineage-item' },
          h('a', { href: trialHref(a.id, expId) }, '#' + a.seq), ' ', h('span', { class: 'num' }, pct(a.score)), ' ',
          a.accepted === true ? badge('accepted', 'yes') : a.accepted === false ? badge('rejected', 'no') : null, ' ',
          a.inherited ? badge('inherited weights', 'inherit') : null, ' ',
          h('span', { class: 'origin' }, a.origin || 'seed'))))];
    }

    return {
      title: id,
      async refresh() {
        const t = await api('/trials/' + encodeURIComponent(id));
        const expId = t.experiment_id || exp;
        draw(crumbs, { expId }, () => [h('a', { href: '#/' }, 'Experiments'), ' / ',
          expId ? h('a', { href: expHref(expId), testid: 'experiment-link' }, shortId(expId)) : null, expId ? ' / ' : null]);
        title.textContent = `Trial #${t.seq} `;
        title.append(h('span', { class: 'muted small id' }, t.id));
        document.title = `Trial #${t.seq} · explore`;
        const { genome: g, hparams: hp, epochs: ep, lineage: lin, ...rest } = t;
        const parent = (lin || [])[0];
        draw(facts, { ...rest, parent_seq: parent && parent.id === t.parent_id ? parent.seq : null }, renderFacts);
        draw(curve.body, ep || [], renderCurve);
        draw(epochs.body, ep || [], renderEpochs);
        draw(hparams.body, hp || {}, (o) => h('table', { class: 'compact kv', testid: 'hparams-table' },
          h('tbody', {}, flatten(o, '', []).map(([k, v]) => h('tr', {}, h('th', { scope: 'row' }, k), h('td', {}, v))))));
        draw(genome.body, g || null, (o) => h('pre', { class: 'json', testid: 'genome-json' }, JSON.stringify(o, null, 2)));
        draw(lineage.body, { list: lin || [], expId }, renderLineage);
      },
    };
  }

  function notFoundView(path) {
    main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, `Nothing at ${path}. `, h('a', { href: '#/' }, 'Back to the experiments')));
    return { title: 'Not found', async refresh() {} };
  }

  // ---------------------------------------------------------------- router and polling

  let view = null;
  let generation = 0;
  let timer = null;

  function route() {
    const hash = location.hash.replace(/^#/, '') || '/';
    const [path, qs] = hash.split('?');
    const query = new URLSearchParams(qs || '');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    generation += 1;
    if (parts.length === 0) view = homeView();
    else if (parts[0] === 'workers' && parts.length === 1) view = workersView();
    else if (parts[0] === 'exp' && parts.length === 2) view = experimentView(parts[1], query);
    else if (parts[0] === 'trial' && parts.length === 2) view = trialView(parts[1], query);
    else view = notFoundView(path);
    document.title = view.title + ' · explore';
    document.querySelectorAll('header nav a').forEach((a) => a.toggleAttribute('aria-current', a.getAttribute('href') === '#' + path));
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
    tick();
  }

  /** Refreshes the current view now and then every POLL_MS; an error shows and retries. */
  let inFlight = -1; // the generation whose refresh is running, so two loops never overlap

  async function tick() {
    clearTimeout(timer);
    const gen = generation;
    if (inFlight === gen) return;
    if (!document.hidden) {
      inFlight = gen;
      try {
        await view.refresh();
        if (gen !== generation) return;
        live.className = 'live ok';
        live.removeAttribute('role');
        live.textContent = 'Live · updated ' + new Date().toLocaleTimeString();
      } catch (e) {
        if (gen !== generation) return;
        live.className = 'live error';
        live.setAttribute('role', 'alert');
        live.textContent = errorText(e) + ' · retrying';
        if (e.status === 404) {
          const note = main.querySelector('[data-testid="load-error"]') || h('p', { class: 'message error', role: 'alert', testid: 'load-error' });
          note.textContent = errorText(e);
          main.prepend(note);
        }
      } finally {
        if (inFlight === gen) inFlight = -1;
      }
    }
    if (gen === generation) timer = setTimeout(tick, POLL_MS);
  }

  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  route();
})();
