// Kyomi Analytics tracking script: the readable source.
//
// The build (script/internal/gen, run by `go generate ./script`) minifies this file with
// esbuild and writes script/dist/. The free identifiers HASH, OUTBOUND and FILES are
// compile-time constants set per variant; esbuild removes the code behind a false constant, so
// the default script carries none of it. Plausible's other extensions are segments: lines
// between `//#if name` (or `//#if !name`, code for when the extension is off) and `//#end`.
// The prebuilt *.min.js variants carry no segment code; the *.tmpl.js templates keep every
// segment between markers, and the server cuts a template down to the requested extensions
// (script/internal/segments). A segment must be whole statements of one statement list.
//
// Promises kept here: no cookies, no storage writes (the opt-out key is only READ), no
// fingerprinting, and every request is a CORS "simple request" (POST with a text/plain body)
// so the browser never sends a preflight.
(function () {
  var w = window;
  var doc = document;
  var loc = location;
  var hist = history;
  // A second copy of the script on the same page (tag managers do that) must not count
  // everything twice: the first copy marks its function.
  if (w.kyomi && w.kyomi.k) {
    return;
  }
  var script = doc.currentScript;
  //#if compat
  // Loaders that run the script without document.currentScript (a module script, an old
  // browser): Plausible's compat variant finds the tag by id="plausible".
  script = script || doc.getElementById('plausible');
  //#end
  var attr = function (name) {
    return script.getAttribute('data-' + name);
  };
  // The endpoint defaults to the origin that served this script.
  var api = attr('api') || new URL(script.src).origin + '/api/event';
  var domain = attr('domain') || loc.hostname;
  var hashMode = HASH || attr('hash') != null;
  var lastPage;

  // matches reports whether path matches a pattern of list, such as "/admin/*, /preview/**"
  // (data-exclude, data-include): '*' matches within one path segment, '**' across segments;
  // a trailing slash is optional.
  function matches(list, path) {
    return (list || '').split(',').some(function (glob) {
      return (
        glob.trim() &&
        RegExp( // without new: the same new object, four bytes less
          '^' +
            glob
              .trim()
              .replace(/[.+?^${}()|[\]\\]/g, '\\$&')
              .replace(/\*\*?/g, function (star) {
                return star[1] ? '.*' : '[^/]*';
              }) +
            '/?$'
        ).test(path)
      );
    });
  }

  // ignored answers why an event must not be sent, or nothing when it may be sent.
  function ignored() {
    //#if !local
    if (
      attr('allow-local') == null &&
      (/^(localhost|127\.|\[::1\]$)/.test(loc.hostname) || loc.protocol == 'file:')
    ) {
      return 1;
    }
    //#end
    // The site owner opts their own browser out with localStorage.kyomi_ignore = 'true'
    // (set by hand in the devtools console; this script never writes storage). Reading
    // storage throws where the user blocks it, which means no opt-out.
    try {
      if (localStorage.kyomi_ignore == 'true') {
        return 1;
      }
    } catch (e) {}
    var path = loc.pathname + (hashMode ? loc.hash : '');
    //#if exclusions
    // data-include (Plausible's exclusions variant): events only on matching paths.
    if (attr('include') && !matches(attr('include'), path)) {
      return 1;
    }
    //#end
    // data-exclude: no events on matching paths.
    return matches(attr('exclude'), path);
  }

  // track sends one event. options: props (string map), revenue ({amount, currency}),
  // callback (called once the request is done or the event was ignored), interactive
  // (false keeps the event out of bounce-rate computation), u (URL override, for manual mode).
  function track(name, options) {
    options = options || {};
    var callback = options.callback;
    //#if engagement
    // A page view first ends the engagement of the page before it (SPA navigation); the new
    // page is engaged only once its own page view is sent.
    if (name == 'pageview') {
      engage();
      engagedUrl = 0;
    }
    //#end
    if (ignored()) {
      return callback && callback();
    }
    var payload = {
      n: name,
      u: options.u || loc.href,
      d: domain,
      r: doc.referrer || null,
    };
    if (options.props) {
      payload.p = options.props;
    }
    //#if pageview-props
    // Plausible's pageview-props: event-<name>="value" attributes of the script tag are props
    // of every event; props passed in the call win.
    var props = {};
    script.getAttributeNames().forEach(function (name) {
      if (!name.indexOf('event-')) {
        props[name.slice(6)] = script.getAttribute(name);
      }
    });
    payload.p = Object.assign(props, payload.p);
    //#end
    if (options.revenue) {
      payload.$ = options.revenue;
    }
    if (hashMode) {
      payload.h = 1;
    }
    if (options.interactive === false) {
      payload.i = false;
    }
    //#if engagement
    payload.sd = options.sd; // undefined values are left out of the JSON
    payload.e = options.e;
    if (name == 'pageview') {
      engagedUrl = payload.u;
      engagedProps = payload.p;
      banked = 0;
      since = !doc.hidden && Date.now();
      depth = seen();
      sentDepth = -1;
    }
    //#end
    var body = JSON.stringify(payload);
    // A string body makes the request text/plain;charset=UTF-8, a CORS-safelisted type:
    // no preflight. keepalive lets the request outlive the page (outbound clicks, unload).
    if (w.fetch) {
      fetch(api, { method: 'POST', body: body, keepalive: true, credentials: 'omit' }).then(
        function (response) {
          callback && callback({ status: response.status });
        },
        function () {
          callback && callback({ status: 0 });
        }
      );
    } else {
      navigator.sendBeacon(api, body);
      callback && callback();
    }
  }

  //#if engagement
  // Engagement, as Plausible's tracker sends it (n: "engagement", sd: scroll depth in percent,
  // e: engaged milliseconds) for the current page view: when the page is hidden or left, and
  // before the next page view of a single-page app; only when the visitor scrolled deeper than
  // last sent or was engaged for at least 3 s since, and never before a page view was sent.
  // Engaged time is the time the page was visible. State: the page view's URL and props
  // (engagedUrl is unset until it was sent), the engaged milliseconds banked from earlier
  // visible stretches, the start of the current one (0 while hidden), the deepest share of the
  // page seen (0..1) and the depth last sent.
  var engagedUrl, engagedProps, banked, since, depth, sentDepth;

  // seen returns the share of the page seen so far, down to the bottom of the viewport.
  function seen() {
    return Math.min(1, (scrollY + innerHeight) / doc.documentElement.scrollHeight);
  }

  function engage() {
    var e = banked + (since && Date.now() - since);
    if (engagedUrl && (sentDepth < depth || e >= 3000)) {
      sentDepth = depth;
      banked = 0;
      since = since && Date.now();
      track('engagement', { u: engagedUrl, props: engagedProps, sd: Math.round(depth * 100), e: e });
    }
  }

  // hide ends the visible stretch and sends the engagement.
  function hide() {
    banked += since && Date.now() - since;
    since = 0;
    engage();
  }

  doc.addEventListener('scroll', function () {
    depth = Math.max(depth, seen());
  });
  doc.addEventListener('visibilitychange', function () {
    doc.hidden ? hide() : (since = since || Date.now());
  });
  // Browsers that fire no visibilitychange when a page is left fire pagehide; after a
  // visibilitychange that sent it, nothing is left to send.
  w.addEventListener('pagehide', hide);
  //#end

  // page counts a page view when the path (plus hash in hash mode) differs from the last
  // one counted: replaceState that keeps the path, or a repeated pushState, counts nothing.
  function page() {
    var path = loc.pathname + (hashMode ? loc.hash : '');
    if (path != lastPage) {
      lastPage = path;
      track('pageview');
    }
  }

  // Calls queued by the stub before this script loaded, from either global, are replayed
  // in order, kyomi's first, after the automatic page view.
  var queue = ((w.kyomi && w.kyomi.q) || []).concat((w.plausible && w.plausible.q) || []);
  w.kyomi = w.plausible = track;
  track.k = 1;

  //#if !manual
  if (attr('manual') == null) {
    ['pushState', 'replaceState'].forEach(function (method) {
      var original = hist[method];
      hist[method] = function () {
        var result = original.apply(this, arguments);
        page();
        return result;
      };
    });
    w.addEventListener(hashMode ? 'hashchange' : 'popstate', page);
    // A page restored from the back/forward cache is a new view of the page.
    w.addEventListener('pageshow', function (event) {
      if (event.persisted) {
        lastPage = 0;
        page();
      }
    });
    // A prerendered page counts only once the user actually sees it.
    if (doc.visibilityState == 'prerender') {
      doc.addEventListener('visibilitychange', function () {
        lastPage || doc.visibilityState != 'visible' || page();
      });
    } else {
      page();
    }
  }
  //#end

  queue.forEach(function (args) {
    track.apply(0, args);
  });

  if (OUTBOUND || FILES) {
    // Link clicks are sent with keepalive and never delay the navigation.
    ['click', 'auxclick'].forEach(function (type) {
      doc.addEventListener(type, function (event) {
        var link = event.target.closest && event.target.closest('a[href]');
        if (!link || (type != 'click' && event.button != 1)) {
          return;
        }
        //#if tagged-events
        // A tagged link sends its own event instead (below).
        if (taggedIn(event.target)) {
          return;
        }
        //#end
        var url = link.href.split(/[?#]/)[0];
        if (
          FILES &&
          (
            attr('file-types') ||
            'pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg'
          )
            .split(',')
            .some(function (ext) {
              return url.slice(-ext.trim().length - 1).toLowerCase() == '.' + ext.trim();
            })
        ) {
          track('File Download', { props: { url: url } });
        } else if (OUTBOUND && /^https?:$/.test(link.protocol) && link.host != loc.host) {
          track('Outbound Link: Click', { props: { url: url } }); // no query string: it can carry tokens
        }
      });
    });
  }

  //#if tagged-events
  // Plausible's tagged events: class="plausible-event-name=Signup plausible-event-plan=pro" on a
  // link, a button or any other element sends the event on click (and middle click), on a form
  // when it is submitted. '+' in a value stands for a space; '--' may replace '=' for site
  // builders that refuse '=' in class names. Like link events, they never delay the navigation
  // or the submission: keepalive carries the request.

  // tagOf returns the event an element's classes describe as {n: name, p: props, r: revenue},
  // or nothing when the element has no plausible-event-name class.
  function tagOf(el) {
    var name;
    var props = {};
    var revenue;
    [].forEach.call(el.classList || [], function (cls) {
      var m = cls.match(/^plausible-event-(.+?)(?:=|--)(.+)/);
      if (m) {
        var key = m[1].toLowerCase();
        var value = m[2].replace(/\+/g, ' ');
        if (key == 'name') {
          name = value;
          return;
        }
        //#if revenue
        // plausible-event-revenue-amount=9.99 plausible-event-revenue-currency=EUR
        if (!key.indexOf('revenue-')) {
          revenue = revenue || {};
          revenue[key.slice(8)] = value;
          return;
        }
        //#end
        props[m[1]] = value;
      }
    });
    return name && { n: name, p: props, r: revenue && revenue.amount && revenue.currency && revenue };
  }

  // taggedIn returns the event of the first tagged element among el and its three closest
  // ancestors, or nothing. A click inside a form counts nothing: only the submission does.
  function taggedIn(el) {
    var tag;
    for (var i = 0; el && i < 4; i++, el = el.parentNode) {
      if (el.tagName == 'FORM') {
        return;
      }
      tag = tag || tagOf(el);
    }
    return tag;
  }

  ['click', 'auxclick'].forEach(function (type) {
    doc.addEventListener(type, function (event) {
      var tag = taggedIn(event.target);
      var link = event.target.closest && event.target.closest('a[href]');
      if (!tag || (type != 'click' && event.button != 1)) {
        return;
      }
      if (link) {
        tag.p.url = link.href.split(/[?#]/)[0]; // no query string, as for outbound links
      }
      track(tag.n, { props: tag.p, revenue: tag.r });
    });
  });
  doc.addEventListener('submit', function (event) {
    var tag = tagOf(event.target);
    tag && track(tag.n, { props: tag.p, revenue: tag.r });
  });
  //#end
})();
