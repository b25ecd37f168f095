// Porthole's phone page: tiles refresh small snapshots, a tap plays live
// MJPEG at a preset, the figures show the data this session used, and
// everything pauses while the tab is hidden.
'use strict';
(function () {
  const body = document.body;
  const tileMs = +body.dataset.tileMs || 5000;
  const usageMs = +body.dataset.usageMs || 5000;
  const tileWidth = +body.dataset.tileWidth || 320;
  const live = document.getElementById('live');
  const liveImg = document.getElementById('live-img');
  const liveName = document.getElementById('live-name');
  const note = document.getElementById('live-note');
  const usage = document.getElementById('usage');
  const capNote = document.getElementById('cap');
  const liveUsage = document.getElementById('live-usage');
  let preset = localStorage.getItem('porthole-preset') || 'saver';
  let current = null; // the tile playing live
  let stopTimer = 0;

  function fmt(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(2) + ' GB';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + ' MB';
    if (n >= 1e3) return Math.round(n / 1e3) + ' kB';
    return n + ' B';
  }

  // Tiles: one snapshot in flight per tile, refreshed while visible.
  function refreshTiles() {
    if (document.hidden || current) return;
    document.querySelectorAll('.tile img').forEach(function (img) {
      if (img.dataset.loading === '1') return;
      const tile = img.closest('.tile');
      img.dataset.loading = '1';
      img.src = tile.dataset.snapshot + '?width=' + tileWidth + '&t=' + Date.now();
    });
  }
  document.querySelectorAll('.tile img').forEach(function (img) {
    img.addEventListener('load', function () { img.dataset.loading = ''; });
    img.addEventListener('error', function () { img.dataset.loading = ''; });
  });
  setInterval(refreshTiles, tileMs);

  // Live view.
  function presetQuery() {
    const b = document.querySelector('[data-preset="' + preset + '"]') || document.querySelector('[data-preset]');
    document.querySelectorAll('[data-preset]').forEach(function (x) {
      x.setAttribute('aria-pressed', x === b ? 'true' : 'false');
    });
    return b ? b.dataset.query : '';
  }
  function play() {
    clearTimeout(stopTimer);
    if (!current) return;
    const q = presetQuery();
    liveImg.src = current.dataset.mjpeg + (q ? '?' + q : '?') + '&t=' + Date.now();
    note.textContent = '';
    const secs = +current.dataset.liveTimeout;
    if (secs > 0) {
      stopTimer = setTimeout(function () {
        pause('Paused after ' + Math.round(secs / 60) + ' min to save data: tap the picture to go on.');
      }, secs * 1000);
    }
  }
  function pause(why) {
    clearTimeout(stopTimer);
    liveImg.removeAttribute('src'); // ends the stream's request
    note.textContent = why;
  }
  function open(tile) {
    if (!tile.dataset.mjpeg) return;
    current = tile;
    liveName.textContent = tile.dataset.name;
    live.hidden = false;
    play();
  }
  function close() {
    pause('');
    current = null;
    live.hidden = true;
    refreshTiles();
  }
  document.querySelectorAll('.tile .shot').forEach(function (b) {
    b.addEventListener('click', function () { open(b.closest('.tile')); });
  });
  document.getElementById('back').addEventListener('click', close);
  liveImg.addEventListener('click', function () { if (!liveImg.getAttribute('src')) play(); });
  document.querySelectorAll('[data-preset]').forEach(function (b) {
    b.addEventListener('click', function () {
      preset = b.dataset.preset;
      localStorage.setItem('porthole-preset', preset);
      if (current) play();
    });
  });
  presetQuery();

  // A hidden tab costs no data: the stream stops and tiles wait.
  document.addEventListener('visibilitychange', function () {
    if (document.hidden) {
      if (current) pause('Paused while the page was hidden.');
    } else if (current) {
      play();
    } else {
      refreshTiles();
    }
  });

  // The figures.
  function poll() {
    if (document.hidden) return;
    fetch('/api/usage', { cache: 'no-store', credentials: 'same-origin' }).then(function (r) {
      if (r.status === 401 || r.redirected) { location.reload(); return null; }
      return r.ok ? r.json() : null;
    }).then(function (u) {
      if (!u) return;
      usage.dataset.session = u.session;
      let s = 'Data used this session: ' + fmt(u.session) + ' · today ' + fmt(u.today);
      if (u.daily_cap > 0) s += ' of ' + fmt(u.daily_cap);
      usage.textContent = s;
      liveUsage.textContent = s;
      if (u.over_cap) {
        capNote.textContent = 'Daily data cap reached: video starts again at ' +
          new Date(u.resets_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) + '.';
        capNote.hidden = false;
        if (current) pause(capNote.textContent);
      } else {
        capNote.hidden = true;
      }
    }).catch(function () {});
  }
  poll();
  setInterval(poll, usageMs);
})();
