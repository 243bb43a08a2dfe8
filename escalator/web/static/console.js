// The console's one script: keeps Today live. Every 3 s it fetches /today.frag and puts it in
// place of #live (no page reload); it waits while the user is choosing incidents or typing,
// and says so in #live-note when something new is held back (or the server cannot be reached).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) { return; }
  var busy = function () {
    var a = document.activeElement;
    return live.querySelector("input[type=checkbox]:checked") !== null ||
      (a && live.contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA"));
  };
  var last = null;
  var note = document.getElementById("live-note");
  var say = function (key) {
    if (!note) { return; }
    note.hidden = !key;
    note.textContent = key ? note.getAttribute("data-" + key) : "";
  };
  var poll = function () {
    fetch(live.getAttribute("data-src"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) { say("offline"); return; }
        var body = html.replace(/<time id="stamp">[^<]*<\/time>/, "");
        if (busy()) {
          if (last === null) { last = body; }  // the page as loaded: the baseline
          say(body !== last ? "held" : null);
          return;
        }
        say(null);
        if (body !== last) { live.innerHTML = html; last = body; }
        else { var s = document.getElementById("stamp"), m = html.match(/<time id="stamp">([^<]*)</); if (s && m) { s.textContent = m[1]; } }
      })
      .catch(function () { say("offline"); });
  };
  poll();
  window.setInterval(poll, 3000);
})();
