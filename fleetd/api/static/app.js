// fleet's dashboard: a snapshot, then diffs, from /dashboard/events (server-sent events); no framework.
(function () {
  "use strict";

  var LIMIT = 500; // rows drawn before "Show all" (a 10,000-unit cluster still renders at once)
  var units = new Map(); // name -> unit row data
  var machines = new Map(); // id -> machine data
  var leader = "";
  var names = null; // sorted unit names (null: to sort again)
  var showAll = false;
  var rows = new Map(); // name -> {tr, data}
  var shown = []; // names currently in the table, in order
  var pending = false;
  var current = null; // the unit shown on the unit page
  var unitTimer = 0;
  var byName = new Intl.Collator(undefined, { numeric: true }).compare; // app@2 before app@10
  var stats = { firstRenderMs: null, snapshots: 0, diffs: 0, changes: 0 };
  window.fleetDashboard = stats;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function short(id) { return id ? id.slice(0, 8) : "-"; }

  function setStatus(state, text) {
    var status = $("status");
    if (status.dataset.state === state && status.textContent === text) return;
    status.dataset.state = state;
    status.textContent = text;
  }

  // -- the event stream ----------------------------------------------------------------------------
  var source = null;
  var retry = 1000;

  function connect() {
    source = new EventSource("/dashboard/events");
    source.addEventListener("snapshot", function (event) {
      var data = JSON.parse(event.data);
      units = new Map();
      data.units.forEach(function (u) { units.set(u.name, u); });
      machines = new Map();
      data.machines.forEach(function (m) { machines.set(m.id, m); });
      leader = data.leader;
      names = null;
      rows.forEach(function (row) { row.data = null; });
      stats.snapshots += 1;
      retry = 1000;
      setStatus("live", "Live");
      render(true);
      if (stats.firstRenderMs === null) stats.firstRenderMs = performance.now(); // since navigation began
    });
    source.addEventListener("diff", function (event) {
      var data = JSON.parse(event.data);
      stats.diffs += 1;
      data.changes.forEach(applyChange);
      schedule();
    });
    source.onopen = function () { setStatus("live", "Live"); };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("down", "Disconnected; retrying…");
        source.close();
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 15000);
      } else {
        setStatus("down", "Reconnecting…");
      }
    };
  }

  function applyChange(change) {
    stats.changes += 1;
    switch (change.op) {
      case "unit":
        if (!units.has(change.unit.name)) names = null;
        units.set(change.unit.name, change.unit);
        if (current === change.unit.name) refreshUnitSoon();
        break;
      case "unit-removed":
        units.delete(change.name);
        names = null;
        if (current === change.name) refreshUnitSoon();
        break;
      case "machine":
        machines.set(change.machine.id, change.machine);
        break;
      case "machine-removed":
        machines.delete(change.id);
        break;
      case "leader":
        leader = change.id;
        break;
    }
  }

  function schedule() {
    if (pending) return;
    pending = true;
    var done = false;
    function go() { if (!done) { done = true; pending = false; render(false); } }
    requestAnimationFrame(go);
    setTimeout(go, 100); // a hidden tab gets no animation frames
  }

  // -- the overview ---------------------------------------------------------------------------------
  function render(full) {
    renderMachines();
    renderUnits(full);
  }

  function renderMachines() {
    var body = $("machines").tBodies[0];
    var ids = Array.from(machines.keys()).sort();
    var fragment = document.createDocumentFragment();
    ids.forEach(function (id) {
      var m = machines.get(id);
      var tr = el("tr");
      tr.dataset.machine = id;
      var cell = el("td", short(id), "machine");
      cell.title = id;
      tr.appendChild(cell);
      tr.appendChild(el("td", m.ip || "-", "mono"));
      tr.appendChild(el("td", Object.keys(m.metadata).map(function (k) { return k + "=" + m.metadata[k]; }).join(", ") || "-"));
      tr.appendChild(el("td", String(m.units) + (m.maxUnits ? " / " + m.maxUnits : ""), "num"));
      var role = el("td");
      if (id === leader) role.appendChild(el("span", "engine leader", "badge leader"));
      if (m.cordoned) role.appendChild(el("span", "cordoned", "badge cordoned"));
      tr.appendChild(role);
      fragment.appendChild(tr);
    });
    body.replaceChildren(fragment);
    $("machine-count").textContent = "(" + ids.length + ")";
    var select = $("machine-filter");
    var chosen = select.value;
    var have = Array.from(select.options).slice(1).map(function (o) { return o.value; }).join(" ");
    if (have !== ids.join(" ")) {
      var options = [el("option", "all")];
      options[0].value = "";
      ids.forEach(function (id) {
        var option = el("option", short(id) + (machines.get(id).ip ? " (" + machines.get(id).ip + ")" : ""));
        option.value = id;
        options.push(option);
      });
      select.replaceChildren.apply(select, options);
      select.value = ids.indexOf(chosen) >= 0 ? chosen : "";
    }
  }

  function activeText(u) {
    if (u.global) return u.activeOn + "/" + u.machines + " active";
    return u.active ? u.active + (u.sub ? " (" + u.sub + ")" : "") : "-";
  }

  function matches(u, query, state, machine) {
    if (machine && u.machine !== machine) return false;
    if (state === "active" && !(u.active === "active" || (u.global && u.activeOn > 0))) return false;
    if (state === "failed" && u.active !== "failed") return false;
    if (state === "other" && (u.active === "active" || (u.global && u.activeOn > 0))) return false;
    if (state === "unplaced" && !u.reason) return false;
    if (!query) return true;
    var text = (u.name + " " + (u.machine || "") + " " + u.desired + " " + (u.current || "") + " " +
                (u.active || "") + " " + (u.sub || "") + " " + (u.reason || "")).toLowerCase();
    return text.indexOf(query) >= 0;
  }

  function fillRow(tr, u) {
    var cells = [
      el("td"),
      el("td", u.desired),
      el("td", u.global ? "global" : u.current),
      el("td", activeText(u), "active active-" + (u.active || "none")),
      el("td", u.global ? "all matching" : short(u.machine), "machine"),
      el("td", u.reason ? "Cannot be placed: " + u.reason : "", u.reason ? "reason" : ""),
    ];
    var link = el("a", u.name);
    link.href = "#/unit/" + encodeURIComponent(u.name);
    cells[0].appendChild(link);
    if (u.machine) {
      var m = machines.get(u.machine);
      cells[4].title = u.machine + (m && m.ip ? " (" + m.ip + ")" : "");
    }
    tr.replaceChildren.apply(tr, cells);
  }

  function renderUnits(full) {
    if (names === null) names = Array.from(units.keys()).sort(byName);
    var query = $("search").value.trim().toLowerCase();
    var state = $("state-filter").value;
    var machine = $("machine-filter").value;
    var visible = [];
    var total = 0;
    for (var i = 0; i < names.length; i++) {
      var u = units.get(names[i]);
      if (!matches(u, query, state, machine)) continue;
      total += 1;
      if (showAll || visible.length < LIMIT) visible.push(names[i]);
    }
    visible.forEach(function (name) {
      var u = units.get(name);
      var row = rows.get(name);
      if (!row) {
        row = { tr: el("tr"), data: null };
        row.tr.dataset.unit = name;
        rows.set(name, row);
      }
      if (row.data !== u || full) { fillRow(row.tr, u); row.data = u; }
    });
    var same = visible.length === shown.length && visible.every(function (n, k) { return n === shown[k]; });
    if (!same) {
      var fragment = document.createDocumentFragment();
      visible.forEach(function (name) { fragment.appendChild(rows.get(name).tr); });
      $("units").tBodies[0].replaceChildren(fragment);
      shown = visible;
    }
    rows.forEach(function (row, name) { if (!units.has(name)) rows.delete(name); });
    var filtered = total !== units.size;
    $("unit-count").textContent = "(" + (filtered ? total + " of " + units.size : units.size) + ")";
    var more = visible.length < total;
    $("more").hidden = !more;
    if (more) $("more-text").textContent = "Showing " + visible.length + " of " + total + ".";
  }

  // -- the unit page --------------------------------------------------------------------------------
  function api(path) {
    return fetch(path, { headers: { Accept: "application/json" } }).then(function (response) {
      return response.json().then(function (data) { return { status: response.status, data: data }; });
    });
  }

  function refreshUnitSoon() {
    clearTimeout(unitTimer);
    unitTimer = setTimeout(loadUnit, 250);
  }

  function fact(list, term, value) {
    list.appendChild(el("dt", term));
    list.appendChild(el("dd", value));
  }

  function loadUnit() {
    var name = current;
    if (name === null) return;
    api("/dashboard/units/" + encodeURIComponent(name)).then(function (answer) {
      if (current !== name) return;
      var missing = answer.status === 404;
      $("unit-missing").hidden = !missing;
      var facts = $("unit-facts");
      facts.replaceChildren();
      var states = $("unit-states").tBodies[0];
      states.replaceChildren();
      if (missing) return;
      var u = answer.data.unit;
      fact(facts, "Desired state", u.desired);
      fact(facts, "Current state", u.global ? "global unit" : u.current);
      fact(facts, "Active", activeText(u));
      fact(facts, "Machine", u.global ? "every matching machine" : (u.machine || "none"));
      if (u.reason) fact(facts, "Cannot be placed", u.reason);
      answer.data.states.forEach(function (s) {
        var tr = el("tr");
        tr.dataset.machine = s.machine;
        var m = machines.get(s.machine);
        var cell = el("td", short(s.machine) + (m && m.ip ? " (" + m.ip + ")" : ""), "machine");
        cell.title = s.machine;
        tr.appendChild(cell);
        [s.scheduled || "-", s.load || "-", s.active || "-", s.sub || "-", s.state || "-"].forEach(function (v, k) {
          tr.appendChild(el("td", v, k === 2 ? "active-" + v : ""));
        });
        states.appendChild(tr);
      });
      $("unit-body").textContent = answer.data.body === null ? "(unit file not found)" : answer.data.body;
    }).catch(function () { $("unit-missing").hidden = true; });
  }

  function loadJournal() {
    var name = current;
    if (name === null) return;
    $("journal-message").textContent = "Loading…";
    api("/dashboard/units/" + encodeURIComponent(name) + "/journal?lines=50").then(function (answer) {
      if (current !== name) return;
      var data = answer.data;
      $("journal-message").textContent = data.message || (data.lines ? data.lines.length + " lines" : "");
      $("unit-journal").textContent = (data.lines || []).join("\n");
    }).catch(function () { $("journal-message").textContent = "The journal could not be read."; });
  }

  // -- routing and keys -----------------------------------------------------------------------------
  function route() {
    var hash = location.hash;
    var onUnit = hash.indexOf("#/unit/") === 0;
    $("overview").hidden = onUnit;
    $("unit-page").hidden = !onUnit;
    if (onUnit) {
      current = decodeURIComponent(hash.slice(7));
      document.title = current + " · fleet";
      $("unit-title").textContent = current;
      $("unit-body").textContent = "";
      $("unit-journal").textContent = "";
      loadUnit();
      loadJournal();
      $("unit-title").focus();
    } else {
      var was = current;
      current = null;
      document.title = "fleet";
      if (was !== null && rows.has(was)) rows.get(was).tr.querySelector("a").focus();
    }
  }

  function init() {
    ["search", "state-filter", "machine-filter"].forEach(function (id) {
      $(id).addEventListener("input", function () { renderUnits(false); });
    });
    $("filters").addEventListener("submit", function (event) { event.preventDefault(); });
    $("search").addEventListener("keydown", function (event) {
      if (event.key === "Escape") { event.target.value = ""; renderUnits(false); }
    });
    $("show-all").addEventListener("click", function () { showAll = true; renderUnits(false); });
    $("journal-refresh").addEventListener("click", loadJournal);
    document.addEventListener("keydown", function (event) {
      var typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
      if (event.key === "/" && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        if (current !== null) location.hash = "#/";
        $("search").focus();
      }
    });
    window.addEventListener("hashchange", route);
    route();
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
