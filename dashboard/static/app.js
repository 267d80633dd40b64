// The collector's built-in dashboard. It reads only through the query path (POST /api/query,
// ops report and execute_query) with a token the user gives in the URL fragment (#token=...),
// which never reaches the server: the page keeps it in sessionStorage and sends it only as the
// Authorization header. Every value from the data is written with textContent, never as HTML.
'use strict';
(function () {
  var STORE = 'kyomi_dashboard_tokens';   // sessionStorage: {"tokens": {wid: token}, "current": wid}
  var $ = function (id) { return document.getElementById(id); };

  // The tables: report dimension, title, column heading.
  var TABLES = [
    ['event:page', 'Top pages', 'Page'],
    ['visit:source', 'Sources', 'Source'],
    ['visit:utm_campaign', 'UTM campaigns', 'Campaign'],
    ['visit:country', 'Countries', 'Country'],
    ['visit:device', 'Devices', 'Device'],
    ['visit:browser', 'Browsers', 'Browser'],
    ['visit:os', 'Operating systems', 'OS']
  ];
  var STATS = [
    ['visitors', 'Unique visitors'], ['visits', 'Visits'], ['pageviews', 'Pageviews'],
    ['bounce_rate', 'Bounce rate'], ['visit_duration', 'Visit duration'],
    ['time_on_page', 'Time on page'], ['scroll_depth', 'Scroll depth']
  ];
  // Engagement metrics come with the report op's Plausible additions; until the server knows
  // them, a report asking for them is refused, and the page asks without them from then on.
  var ENGAGEMENT = ['time_on_page', 'scroll_depth'];
  var engagement = true;

  var state = { range: '7d', from: '', to: '', filters: [] };
  var chart = null, liveTimer = null, seq = 0, generation = 0;

  // --- tokens ---------------------------------------------------------------------------------

  function claims(token) {
    try {
      var p = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(p + '==='.slice((p.length + 3) % 4)));
    } catch (e) { return null; }
  }
  function loadStore() {
    try { return JSON.parse(sessionStorage.getItem(STORE)) || { tokens: {} }; } catch (e) { return { tokens: {} }; }
  }
  function saveStore(s) { sessionStorage.setItem(STORE, JSON.stringify(s)); }

  // takeToken moves a token from the fragment into sessionStorage and removes it from the
  // address bar and history, so it is neither bookmarked nor shown over a shoulder.
  function takeToken() {
    var s = loadStore();
    var m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      var token = decodeURIComponent(m[1]);
      var c = claims(token);
      if (c && c.wid) {
        s.tokens[c.wid] = token;
        s.current = c.wid;
        saveStore(s);
      }
      history.replaceState(null, '', location.pathname + location.search);
    }
    if (!s.current || !s.tokens[s.current]) return null;
    return s;
  }

  // --- the query path -------------------------------------------------------------------------

  function call(op, params) {
    var s = loadStore();
    var token = s.tokens[s.current];
    return fetch('/api/query', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Authorization': 'Bearer ' + token },
      body: JSON.stringify({ id: 'd' + (++seq), op: op, params: params }),
      credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer'
    }).then(function (r) { return r.json(); }).then(function (m) {
      if (m.type !== 'result') {
        var e = new Error((m.error && m.error.message) || 'query failed');
        e.code = m.error && m.error.code;
        throw e;
      }
      return rowsOf(m.result);
    });
  }

  // rowsOf turns a result into objects keyed by column name.
  function rowsOf(res) {
    var names = res.columns.map(function (c) { return c.name; });
    return res.rows.map(function (row) {
      var o = {};
      names.forEach(function (n, i) { o[n] = row[i]; });
      return o;
    });
  }

  function dateRange() {
    return state.range === 'custom' && state.from && state.to ? [state.from, state.to] : (state.range === 'custom' ? '7d' : state.range);
  }

  // report asks the report op with the page's date range and filters. extra metrics are dropped
  // for good when the server does not know them yet.
  function report(p, extra) {
    var params = { metrics: p.metrics.concat(engagement && extra ? extra : []), date_range: dateRange(), filters: state.filters };
    if (p.dimensions) params.dimensions = p.dimensions;
    if (p.order_by) params.order_by = p.order_by;
    if (p.limit) params.limit = p.limit;
    return call('report', params).catch(function (e) {
      // Several reports run at once: each one refused this way retries without them.
      if (extra && e.code === 'invalid_request' && /unknown metric/.test(e.message) &&
          extra.some(function (m) { return e.message.indexOf(m) >= 0; })) {
        engagement = false;
        return report(p, null);
      }
      throw e;
    });
  }

  // --- formatting -----------------------------------------------------------------------------

  function num(v) { return Number(v).toLocaleString('en-US'); }
  function duration(v) {
    var s = Math.round(Number(v)), m = Math.floor(s / 60);
    return m ? m + 'm ' + (s % 60) + 's' : s + 's';
  }
  var FORMAT = {
    bounce_rate: function (v) { return num(v) + '%'; },
    scroll_depth: function (v) { return num(v) + '%'; },
    visit_duration: duration,
    time_on_page: duration
  };
  function fmt(metric, v) {
    if (v === null || v === undefined) return '–';
    return (FORMAT[metric] || num)(v);
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // --- the page -------------------------------------------------------------------------------

  function showError(e) {
    var box = $('error');
    box.textContent = e.code === 'unauthenticated' || e.code === 'token_expired' || e.code === 'token_revoked'
      ? 'The token was refused (' + e.code + '). Issue a new one with `collector token issue`.'
      : 'Query failed: ' + e.message;
    box.hidden = false;
  }

  function renderFilters() {
    var box = $('filters');
    box.textContent = '';
    state.filters.forEach(function (f, i) {
      var label = TABLES.filter(function (t) { return t[0] === f[1]; })[0];
      var chip = el('button', 'chip', (label ? label[2] : f[1]) + ' is ' + (f[2][0] || '(none)') + '  ×');
      chip.title = 'Remove this filter';
      chip.dataset.dim = f[1];
      chip.addEventListener('click', function () { state.filters.splice(i, 1); refresh(); });
      box.appendChild(chip);
    });
  }

  function addFilter(dim, value) {
    state.filters = state.filters.filter(function (f) { return f[1] !== dim; });
    state.filters.push(['is', dim, [value]]);
    refresh();
  }

  function renderStats(row) {
    var box = $('stats');
    box.textContent = '';
    STATS.forEach(function (s) {
      if (!(s[0] in row)) return;
      var card = el('div', 'stat');
      card.dataset.metric = s[0];
      card.appendChild(el('div', 'label', s[1]));
      card.appendChild(el('div', 'value', fmt(s[0], row[s[0]])));
      box.appendChild(card);
    });
  }

  // buckets lists every x of the chart so that days or hours without visits show as zero.
  function buckets(hourly, rows) {
    var key = hourly ? 'time:hour' : 'time:day';
    var have = {};
    // time:hour may come as DateTime64 text ("... 10:00:00.000"): compare the first 19 characters.
    rows.forEach(function (r) { have[String(r[key]).slice(0, hourly ? 19 : 10)] = r; });
    var out = [];
    var first, last;
    var dr = dateRange(), now = new Date();
    var today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
    if (Array.isArray(dr)) { first = Date.parse(dr[0] + 'T00:00:00Z'); last = Date.parse(dr[1] + 'T00:00:00Z'); }
    else if (dr === 'day') { first = last = today; }
    else if (dr === 'month') { first = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1); last = today; }
    else { first = today - ((dr === '30d' ? 30 : 7) - 1) * 864e5; last = today; }
    var step = hourly ? 36e5 : 864e5, end = hourly ? last + 864e5 - 36e5 : last;
    for (var t = first; t <= end; t += step) {
      var iso = new Date(t).toISOString();
      var k = hourly ? iso.slice(0, 10) + ' ' + iso.slice(11, 19) : iso.slice(0, 10);
      var r = have[k] || {};
      out.push({ t: t / 1000, label: k, visitors: Number(r.visitors || 0), pageviews: Number(r.pageviews || 0) });
    }
    return out;
  }

  function renderChart(points, hourly) {
    var body = $('series').tBodies[0];
    body.textContent = '';
    points.forEach(function (p) {
      var tr = el('tr');
      tr.appendChild(el('td', '', p.label));
      tr.appendChild(el('td', 'num', String(p.visitors)));
      tr.appendChild(el('td', 'num', String(p.pageviews)));
      body.appendChild(tr);
    });
    var data = [points.map(function (p) { return p.t; }), points.map(function (p) { return p.visitors; }), points.map(function (p) { return p.pageviews; })];
    var box = $('chart');
    var width = Math.max(300, box.clientWidth);
    if (chart) chart.destroy();
    chart = new uPlot({
      width: width, height: 260, tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), 'Etc/UTC'); },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(4, Math.ceil(max * 1.1))]; } } },
      // Ticks on whole hours or days only: a day range must not label the same day three times.
      axes: [{ values: hourly ? '{HH}:{mm}' : '{D} {MMM}', space: 50,
        incrs: hourly ? [3600, 2 * 3600, 3 * 3600, 6 * 3600] : [86400, 2 * 86400, 7 * 86400, 14 * 86400] }, { size: 50 }],
      series: [{},
        { label: 'Visitors', stroke: '#4f46e5', width: 2, fill: 'rgba(79,70,229,0.08)', points: { size: 5 } },
        { label: 'Pageviews', stroke: '#10b981', width: 2, points: { size: 5 } }]
    }, data, box);
  }

  function renderTable(dim, title, heading, rows, withEngagement) {
    var card = el('section', 'card');
    card.dataset.dim = dim;
    card.appendChild(el('h2', '', title));
    var metrics = dim === 'event:page' ? ['visitors', 'pageviews'] : ['visitors'];
    if (withEngagement) metrics = metrics.concat(ENGAGEMENT.filter(function (m) { return rows.length && m in rows[0]; }));
    if (metrics.length > 2) card.className += ' wide';
    var table = el('table', 'list');
    var head = el('tr');
    head.appendChild(el('th', '', heading));
    metrics.forEach(function (m) { head.appendChild(el('th', 'num', { visitors: 'Visitors', pageviews: 'Pageviews', time_on_page: 'Time on page', scroll_depth: 'Scroll depth' }[m])); });
    table.appendChild(el('thead')).appendChild(head);
    var body = table.appendChild(el('tbody'));
    var top = rows.reduce(function (a, r) { return Math.max(a, Number(r.visitors)); }, 0) || 1;
    rows.forEach(function (r) {
      var value = r[dim];
      var tr = el('tr');
      tr.dataset.value = value;
      tr.title = 'Filter by this ' + heading.toLowerCase();
      var name = el('td', 'name bar');
      var bar = el('i');
      bar.style.width = (100 * Number(r.visitors) / top).toFixed(1) + '%';
      name.appendChild(bar);
      name.appendChild(el('span', '', value === '' ? '(none)' : value));
      tr.appendChild(name);
      metrics.forEach(function (m) {
        var td = el('td', 'num', fmt(m, r[m]));
        td.dataset.metric = m;
        tr.appendChild(td);
      });
      tr.addEventListener('click', function () { addFilter(dim, value); });
      body.appendChild(tr);
    });
    if (!rows.length) card.appendChild(el('p', 'empty', 'No data in this range.'));
    else card.appendChild(table);
    return card;
  }

  function refresh() {
    var gen = ++generation;
    $('error').hidden = true;
    renderFilters();
    var hourly = dateRange() === 'day';
    var dimT = hourly ? 'time:hour' : 'time:day';
    var jobs = [
      report({ metrics: ['visitors', 'visits', 'pageviews', 'bounce_rate', 'visit_duration'] }, ENGAGEMENT).then(function (rows) {
        if (gen === generation) renderStats(rows[0] || {});
      }),
      report({ metrics: ['visitors', 'pageviews'], dimensions: [dimT] }).then(function (rows) {
        if (gen === generation) renderChart(buckets(hourly, rows), hourly);
      })
    ];
    var box = $('tables');
    var cards = TABLES.map(function () { return null; });
    TABLES.forEach(function (t, i) {
      var metrics = t[0] === 'event:page' ? ['visitors', 'pageviews'] : ['visitors'];
      jobs.push(report({ metrics: metrics, dimensions: [t[0]], order_by: [['visitors', 'desc']], limit: 10 },
        t[0] === 'event:page' ? ENGAGEMENT : null).then(function (rows) {
        cards[i] = renderTable(t[0], t[1], t[2], rows, t[0] === 'event:page');
      }));
    });
    return Promise.all(jobs).then(function () {
      if (gen !== generation) return;
      box.textContent = '';
      cards.forEach(function (c) { box.appendChild(c); });
      document.body.dataset.loaded = String(gen);
    }).catch(function (e) { if (gen === generation) showError(e); });
  }

  // live shows the last 30 minutes, whatever the date range: visitors and pageviews, and the
  // pages being viewed. It is refreshed every 15 s while the tab is visible.
  function live() {
    var sql30 = "SELECT toUInt64(uniqExact(visitor_id)) AS visitors, toUInt64(countIf(name = 'pageview')) AS pageviews " +
      'FROM events WHERE ts >= now64(3) - INTERVAL 30 MINUTE';
    var pages = "SELECT pathname, toUInt64(uniqExact(visitor_id)) AS visitors FROM events " +
      "WHERE ts >= now64(3) - INTERVAL 30 MINUTE AND name = 'pageview' GROUP BY pathname ORDER BY visitors DESC, pathname LIMIT 5";
    return Promise.all([call('execute_query', { sql: sql30 }), call('execute_query', { sql: pages })]).then(function (res) {
      var box = $('live');
      box.textContent = '';
      var t = res[0][0] || {};
      [['visitors', 'visitors'], ['pageviews', 'pageviews']].forEach(function (m) {
        var s = el('div', 'stat');
        s.dataset.metric = 'live_' + m[0];
        s.appendChild(el('div', 'label', m[1]));
        s.appendChild(el('div', 'value', num(t[m[0]] || 0)));
        box.appendChild(s);
      });
      var list = el('div');
      list.appendChild(el('div', 'label', 'Pages now'));
      if (!res[1].length) list.appendChild(el('div', 'empty', 'Nobody in the last 30 minutes.'));
      res[1].forEach(function (r) { list.appendChild(el('div', 'live-page', r.pathname + ' · ' + num(r.visitors))); });
      box.appendChild(list);
    }).catch(showError);
  }

  function startLive() {
    if (liveTimer) clearInterval(liveTimer);
    live();
    liveTimer = setInterval(function () { if (!document.hidden) live(); }, 15000);
  }

  function workspaceSwitcher(s) {
    var wids = Object.keys(s.tokens).sort();
    var sel = $('workspace');
    $('wid').textContent = wids.length > 1 ? '' : s.current;
    sel.hidden = wids.length < 2;
    sel.textContent = '';
    wids.forEach(function (w) {
      var o = el('option', '', w);
      o.value = w;
      o.selected = w === s.current;
      sel.appendChild(o);
    });
  }

  function landing() {
    var origin = location.origin;
    $('landing-url').textContent = origin + '/#token=TOKEN';
    $('snippet').textContent = '<script defer data-domain="example.com" src="' + origin + '/js/script.js"></script>';
  }

  // enter shows the dashboard for the current token (after a load, or after a new token came in
  // the fragment of this tab).
  function enter(s) {
    $('landing').hidden = true;
    $('dash').hidden = false;
    $('range').hidden = false;
    state.filters = [];
    workspaceSwitcher(s);
    refresh();
    startLive();
  }

  function start() {
    $('workspace').addEventListener('change', function (e) {
      var st = loadStore();
      st.current = e.target.value;
      saveStore(st);
      enter(st);
    });
    $('range').addEventListener('change', function (e) {
      state.range = e.target.value;
      $('custom').hidden = state.range !== 'custom';
      if (state.range !== 'custom' || (state.from && state.to)) refresh();
    });
    ['from', 'to'].forEach(function (id) {
      $(id).addEventListener('change', function (e) {
        state[id] = e.target.value;
        if (state.from && state.to) refresh();
      });
    });
    window.addEventListener('resize', function () {
      if (chart) chart.setSize({ width: Math.max(300, $('chart').clientWidth), height: 260 });
    });
    window.addEventListener('hashchange', function () {
      if (!/token=/.test(location.hash)) return;
      var s = takeToken();
      if (s) enter(s);
    });
    var s = takeToken();
    if (s) enter(s);
    else landing();
  }

  start();
})();
