// fleetzip coordinator page: agents with live health, a download form with a plan preview,
// and the downloads in progress. Plain script, no dependencies, no build step.
//
// Every request is a same-origin fetch with credentials, so HTTP Basic credentials the
// browser holds for the coordinator go along. API errors ({"error": {"code", "message"}})
// are shown in the page. Agent data is untrusted: it only ever reaches the DOM as text.
(function () {
  'use strict';

  var DEFAULT_REFRESH_SECONDS = 3;
  var MAX_FILES_LISTED = 200; // per node in the plan preview; the rest is summarised

  // ---- small helpers -------------------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  // el('td', {className: 'x', dataset: {a: 1}}, 'text', childNode, ...)
  function el(tag, props) {
    var node = document.createElement(tag);
    var key;
    props = props || {};
    for (key in props) {
      if (!Object.prototype.hasOwnProperty.call(props, key)) continue;
      if (key === 'dataset') {
        Object.keys(props.dataset).forEach(function (k) { node.dataset[k] = props.dataset[k]; });
      } else if (key === 'attrs') {
        Object.keys(props.attrs).forEach(function (k) { node.setAttribute(k, props.attrs[k]); });
      } else {
        node[key] = props[key];
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
    }
    return node;
  }

  function replaceChildren(parent, children) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    children.forEach(function (child) { parent.appendChild(child); });
  }

  function refreshSeconds() {
    var value = Number(new URLSearchParams(window.location.search).get('refresh'));
    return value >= 0.5 && value <= 600 ? value : DEFAULT_REFRESH_SECONDS;
  }

  var UNITS = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

  function humanBytes(n) {
    var value = Number(n);
    var unit = 0;
    while (value >= 1024 && unit < UNITS.length - 1) { value /= 1024; unit++; }
    return unit === 0 ? value + ' bytes' : value.toFixed(value < 10 ? 2 : 1) + ' ' + UNITS[unit];
  }

  function plural(n, word) { return n + ' ' + word + (n === 1 ? '' : 's'); }

  function exactBytes(n) { return Number(n).toLocaleString('en-US') + ' bytes'; }

  // "1.5 MiB (1,572,864 bytes)"; just "512 bytes" when small.
  function sizeText(n) {
    return n < 1024 ? exactBytes(n) : humanBytes(n) + ' (' + exactBytes(n) + ')';
  }

  function ago(iso) {
    if (!iso) return 'never';
    var seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (!isFinite(seconds)) return iso;
    if (seconds < 2) return 'just now';
    if (seconds < 90) return seconds + ' s ago';
    if (seconds < 5400) return Math.round(seconds / 60) + ' min ago';
    if (seconds < 172800) return Math.round(seconds / 3600) + ' h ago';
    return Math.round(seconds / 86400) + ' days ago';
  }

  function timeElement(iso) {
    if (!iso) return el('span', {className: 'muted'}, 'never');
    return el('time', {dateTime: iso, title: iso}, ago(iso));
  }

  function labelsText(labels) {
    return Object.keys(labels || {}).sort().map(function (k) { return k + '=' + labels[k]; });
  }

  // ---- the API -------------------------------------------------------------------------

  function ApiError(status, code, message) {
    this.status = status;
    this.code = code;
    this.message = message;
  }
  ApiError.prototype.toString = function () {
    return (this.status ? this.status + ' ' : '') + this.code + ': ' + this.message;
  };

  function getJson(path, params) {
    var url = params ? path + '?' + params.toString() : path;
    return fetch(url, {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: {Accept: 'application/json'}
    }).catch(function (err) {
      throw new ApiError(0, 'network', 'cannot reach the coordinator (' + err.message + ')');
    }).then(function (response) {
      return response.text().then(function (text) {
        var body = null;
        try { body = JSON.parse(text); } catch (ignored) { body = null; }
        if (!response.ok) {
          var error = body && body.error ? body.error : {};
          throw new ApiError(response.status, error.code || 'http_error',
                             error.message || response.statusText || 'request failed');
        }
        if (body === null) {
          throw new ApiError(response.status, 'bad_response', 'the answer is not JSON');
        }
        return body;
      });
    });
  }

  // ---- status line (aria-live): only real news, not every refresh ----------------------

  function announce(text, kind) {
    var status = $('status');
    if (status.textContent === text) return;
    status.textContent = text;
    status.className = 'status' + (kind ? ' ' + kind : '');
  }

  function showError(id, error) {
    var box = $(id);
    if (error) {
      if (!box.hidden && box.textContent === String(error)) return; // no repeated alerts
      box.textContent = String(error);
      box.hidden = false;
    } else {
      box.textContent = '';
      box.hidden = true;
    }
  }

  // ---- agents --------------------------------------------------------------------------

  var HEALTH_TEXT = {pass: '✓ pass', fail: '✗ fail', unknown: '? unknown'};

  function agentRow(agent) {
    var health = agent.health in HEALTH_TEXT ? agent.health : 'unknown';
    var healthCell = el('td', {className: 'health-cell', dataset: {label: 'Health'}},
      el('span', {className: 'health health-' + health}, HEALTH_TEXT[health]));
    if (agent.error) {
      healthCell.appendChild(el('div', {className: 'agent-error small'}, agent.error));
    }
    var labels = labelsText(agent.labels).map(function (text) {
      return el('span', {className: 'tag'}, text);
    });
    return el('tr', {dataset: {agent: agent.name, health: health}},
      el('th', {scope: 'row', dataset: {label: 'Name'}}, agent.name,
         el('span', {className: 'source small muted'}, agent.source ? ' ' + agent.source : '')),
      el('td', {className: 'url', dataset: {label: 'URL'}}, agent.url),
      el('td', {dataset: {label: 'Labels'}}, labels.length ? el('span', {}, ...labels) : '—'),
      healthCell,
      el('td', {dataset: {label: 'Version'}}, agent.version || '—'),
      el('td', {dataset: {label: 'Last seen'}}, timeElement(agent.last_seen)));
  }

  var lastHealth = {};

  function noteHealthChanges(agents) {
    var changes = [];
    agents.forEach(function (agent) {
      var before = lastHealth[agent.name];
      if (before !== undefined && before !== agent.health) {
        changes.push(agent.name + ' is now ' + agent.health);
      }
    });
    lastHealth = {};
    agents.forEach(function (agent) { lastHealth[agent.name] = agent.health; });
    if (changes.length) announce(changes.join('; '));
  }

  function renderAgents(agents) {
    replaceChildren($('agents-body'), agents.map(agentRow));
    if (!agents.length) {
      $('agents-body').appendChild(el('tr', {},
        el('td', {colSpan: 6, className: 'muted'}, 'No agent known yet.')));
    }
    var healthy = agents.filter(function (a) { return a.health === 'pass'; }).length;
    $('agents-summary').textContent = healthy + ' of ' + agents.length + ' healthy';
    noteHealthChanges(agents);
    renderNodeChoices(agents);
  }

  function refreshAgents() {
    return getJson('api/agents').then(function (body) {
      showError('agents-error', null);
      renderAgents(body.agents || []);
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    }, function (error) {
      showError('agents-error', 'Could not refresh the agents: ' + error);
    });
  }

  // ---- node checkboxes: rebuilt only when the set of names changes ---------------------

  var shownNodes = '';

  function renderNodeChoices(agents) {
    var names = agents.map(function (a) { return a.name; }).sort();
    if (names.join('\n') === shownNodes) return;
    shownNodes = names.join('\n');
    var checked = selectedNodes();
    var list = $('nodes-list');
    replaceChildren(list, names.map(function (name, i) {
      return el('label', {className: 'check'},
        el('input', {type: 'checkbox', name: 'nodes', value: name, id: 'node-' + i,
                     checked: checked.indexOf(name) >= 0}),
        ' ' + name);
    }));
    if (!names.length) list.appendChild(el('span', {className: 'muted'}, 'No agent known.'));
  }

  function selectedNodes() {
    var boxes = document.querySelectorAll('#nodes-list input[name=nodes]:checked');
    return Array.prototype.map.call(boxes, function (box) { return box.value; });
  }

  // ---- the form and the plan preview ---------------------------------------------------

  var TEXT_FIELDS = ['path', 'glob', 'since', 'labels', 'name'];

  function selectionParams(form) {
    var params = new URLSearchParams();
    params.set('root', form.elements.root.value.trim());
    TEXT_FIELDS.forEach(function (field) {
      var value = form.elements[field].value.trim();
      if (value) params.set(field, value);
    });
    var nodes = selectedNodes();
    if (nodes.length) params.set('nodes', nodes.join(','));
    var compression = form.querySelector('input[name=compression]:checked');
    params.set('compression', compression ? compression.value : 'stored');
    return params;
  }

  var plannedQuery = null;

  function nodeRow(node) {
    var files = node.files || [];
    var details = el('details', {},
      el('summary', {}, plural(files.length, 'file')),
      el('ul', {className: 'files small'}, ...files.slice(0, MAX_FILES_LISTED).map(function (f) {
        return el('li', {}, el('code', {}, f.entry || f.path), ' ', el('span', {className: 'muted'},
          humanBytes(f.size)));
      })));
    if (files.length > MAX_FILES_LISTED) {
      details.appendChild(el('p', {className: 'muted small'},
        '… and ' + (files.length - MAX_FILES_LISTED) + ' more'));
    }
    return el('tr', {dataset: {node: node.node}},
      el('th', {scope: 'row', dataset: {label: 'Node'}}, node.node),
      el('td', {dataset: {label: 'Files'}}, details),
      el('td', {dataset: {label: 'Size', bytes: String(node.bytes)}}, sizeText(node.bytes)));
  }

  function skippedItem(skip) {
    return el('li', {dataset: {node: skip.node}},
      el('strong', {}, skip.node), ' ', el('span', {className: 'muted'}, skip.url || ''),
      ' — ', el('span', {className: 'state state-' + skip.state}, skip.state),
      skip.error ? ': ' + skip.error : '');
  }

  function renderPlan(plan, params) {
    $('plan-files').textContent = String(plan.files);
    $('plan-total').textContent = sizeText(plan.total_bytes);
    $('plan-total').dataset.bytes = String(plan.total_bytes);
    var archive = $('plan-archive');
    if (plan.archive_size !== null && plan.archive_size !== undefined) {
      archive.textContent = sizeText(plan.archive_size) + ' exactly';
      archive.dataset.bytes = String(plan.archive_size);
    } else {
      archive.textContent = 'not known ahead (' +
        (params.get('compression') === 'deflate' ? 'deflate' : 'some sizes unknown') +
        '): no progress percentage';
      delete archive.dataset.bytes;
    }
    var nodes = plan.nodes || [];
    var skipped = plan.skipped || [];
    $('plan-nodes-count').textContent = nodes.length + ' taking part' +
      (skipped.length ? ', ' + skipped.length + ' skipped' : '');
    replaceChildren($('plan-nodes-body'), nodes.map(nodeRow));
    replaceChildren($('plan-skipped-list'), skipped.map(skippedItem));
    $('plan-skipped').hidden = !skipped.length;
    $('plan-empty').hidden = plan.files > 0;

    var link = $('download-link');
    link.href = 'api/download?' + params.toString();
    link.setAttribute('download', params.get('name') || '');
    link.hidden = false;
    $('plan-stale').hidden = true;
    $('plan').hidden = false;
    plannedQuery = params.toString();
  }

  function previewPlan(event) {
    event.preventDefault();
    var form = event.target;
    var params = selectionParams(form);
    var button = $('preview-button');
    button.disabled = true;
    showError('form-error', null);
    announce('Planning…');
    getJson('api/plan', params).then(function (plan) {
      renderPlan(plan, params);
      announce('Plan ready: ' + plural(plan.files, 'file') + ', ' + humanBytes(plan.total_bytes) + '.');
    }, function (error) {
      $('plan').hidden = true;
      plannedQuery = null;
      showError('form-error', 'Cannot plan this download: ' + error);
      announce('The plan failed.', 'bad');
    }).then(function () { button.disabled = false; });
  }

  // A preview belongs to the exact query it was made for: any change hides the link.
  function checkStale() {
    if (plannedQuery === null) return;
    var stale = selectionParams($('download-form')).toString() !== plannedQuery;
    $('plan-stale').hidden = !stale;
    $('download-link').hidden = stale;
  }

  function downloadStarted() {
    announce('Download started: your browser shows its progress.');
    window.setTimeout(refreshDownloads, 500);
  }

  // ---- downloads in progress -----------------------------------------------------------

  function requestText(request) {
    request = request || {};
    var parts = [request.root || '?'];
    if (request.path) parts.push(request.path);
    if (request.glob) parts.push(request.glob);
    var text = parts.join(' / ');
    if (request.nodes && request.nodes.length) text += ' on ' + request.nodes.join(', ');
    var labels = labelsText(request.labels);
    if (labels.length) text += ' [' + labels.join(',') + ']';
    if (request.since) text += ' since ' + new Date(request.since * 1000).toISOString();
    if (request.compression === 'deflate') text += ' (deflate)';
    return text;
  }

  function downloadItem(download) {
    var total = download.archive_size;
    var progress = total
      ? el('progress', {max: total, value: Math.min(download.bytes_sent, total),
                        attrs: {'aria-label': 'bytes sent of download ' + download.id}})
      : null;
    var sent = humanBytes(download.bytes_sent) + (total ? ' of ' + humanBytes(total) : ' sent');
    var nodes = (download.nodes || []).map(function (n) {
      return el('li', {dataset: {node: n.node}},
        el('strong', {}, n.node), ' ', el('span', {className: 'state state-' + n.state}, n.state),
        ' ' + n.files_done + '/' + plural(n.files_total, 'file') + ', ' + humanBytes(n.bytes));
    });
    return el('li', {className: 'download', dataset: {id: download.id}},
      el('div', {className: 'download-head'},
        el('strong', {}, requestText(download.request)),
        el('span', {className: 'muted small'},
          ' by ' + (download.user || 'anonymous') + ', started ', timeElement(download.started))),
      progress, el('div', {className: 'small'}, sent),
      el('ul', {className: 'download-nodes small'}, ...nodes));
  }

  function refreshDownloads() {
    return getJson('api/downloads').then(function (body) {
      showError('downloads-error', null);
      var downloads = body.downloads || [];
      replaceChildren($('downloads-list'), downloads.map(downloadItem));
      $('downloads-empty').hidden = downloads.length > 0;
    }, function (error) {
      showError('downloads-error', 'Could not refresh the downloads: ' + error);
    });
  }

  // ---- wiring --------------------------------------------------------------------------

  function refreshLoop() {
    var work = document.hidden ? Promise.resolve()
      : Promise.all([refreshAgents(), refreshDownloads()]);
    work.then(function () { window.setTimeout(refreshLoop, refreshSeconds() * 1000); });
  }

  function start() {
    var form = $('download-form');
    form.addEventListener('submit', previewPlan);
    form.addEventListener('input', checkStale);
    form.addEventListener('change', checkStale);
    $('download-link').addEventListener('click', downloadStarted);
    document.addEventListener('visibilitychange', function () {
      if (!document.hidden) { refreshAgents(); refreshDownloads(); }
    });
    refreshLoop();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
}());
