/*
 * supportflow agent workspace: plain JavaScript, no build step (served by `supportflow workspace`).
 *
 * Sign-in posts to /workspace/api/login, which sets an HttpOnly cookie; the page never sees the
 * token. The queue comes over the WebSocket /workspace/ws (authenticated by that cookie) and
 * updates live; actions go to /workspace/api/... as JSON, each with a random action id that is
 * kept until the server answers, so a retried click is applied once. Every text from a customer
 * or a tool is rendered with textContent, never as HTML.
 */
(function () {
  "use strict";

  var API = "/workspace/api";
  var state = {
    me: null,
    entries: {},        // escalation_id -> queue row
    openId: null,
    detail: null,
    directory: null,
    socket: null,
    attempts: 0,
    pending: {},        // action key -> action id, kept until the server answered
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function actionId() {
    var bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return "a" + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function idFor(key) {
    if (!state.pending[key]) state.pending[key] = actionId();
    return state.pending[key];
  }

  var statusTimer = null;
  function toast(text, isError) {
    var box = $("status");
    box.textContent = text;
    box.className = "show" + (isError ? " error" : "");
    clearTimeout(statusTimer);
    statusTimer = setTimeout(function () { box.className = ""; }, isError ? 6000 : 2500);
  }

  function call(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401 && path !== "/login") signedOut(data.error || "signed out");
        if (!response.ok) {
          var error = new Error(data.error || ("HTTP " + response.status));
          error.status = response.status;
          throw error;
        }
        return data;
      });
    });
  }

  // An action on the open conversation; its id survives a failed attempt, so a retry is the same action.
  function act(verb, key, fields) {
    var id = state.openId;
    var body = Object.assign({ action_id: idFor(key) }, fields || {});
    return call("POST", "/entries/" + encodeURIComponent(id) + "/" + verb, body).then(function (result) {
      delete state.pending[key];
      return result;
    }).catch(function (error) {
      if (error.status && error.status < 500 && error.status !== 429) delete state.pending[key];
      toast(error.message, true);
      throw error;
    });
  }

  // ---- sign-in ------------------------------------------------------------------------------

  function showLogin(message) {
    $("login").hidden = false;
    $("app").hidden = true;
    ["me", "presence-box", "logout", "live"].forEach(function (id) { $(id).hidden = true; });
    $("login-error").textContent = message || "";
  }

  function signedOut(message) {
    if (state.socket) { state.socket.onclose = null; state.socket.close(); state.socket = null; }
    state.me = null;
    showLogin(message);
  }

  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    $("login-error").textContent = "";
    call("POST", "/login", { agent_id: $("login-agent").value.trim(), password: $("login-password").value })
      .then(function (data) { $("login-password").value = ""; start(data.agent); })
      .catch(function (error) { $("login-error").textContent = error.message; });
  });

  $("logout").addEventListener("click", function () {
    call("POST", "/presence", { action_id: actionId(), presence: "offline" })
      .catch(function () {})
      .then(function () { return call("POST", "/logout", {}); })
      .then(function () { signedOut("signed out"); });
  });

  $("presence").addEventListener("change", function () {
    var presence = $("presence").value;
    call("POST", "/presence", { action_id: idFor("presence:" + presence), presence: presence })
      .then(function () { delete state.pending["presence:" + presence]; toast("you are " + presence); })
      .catch(function (error) { toast(error.message, true); });
  });

  function start(me) {
    state.me = me;
    $("login").hidden = true;
    $("app").hidden = false;
    $("me").hidden = false;
    $("me").textContent = (me.display_name || me.agent_id) + " · " + me.role;
    $("presence-box").hidden = false;
    $("presence").value = me.presence || "offline";
    $("logout").hidden = false;
    $("others-title").hidden = me.role !== "supervisor";
    $("queue-others").hidden = me.role !== "supervisor";
    $("kb-pane").hidden = me.role !== "supervisor";
    call("GET", "/directory").then(function (directory) { state.directory = directory; });
    connect();
  }

  // ---- the live queue -----------------------------------------------------------------------

  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/workspace/ws";
    var socket = new WebSocket(url);
    state.socket = socket;
    socket.onopen = function () { state.attempts = 0; $("live").hidden = false; };
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      if (frame.type === "welcome") {
        state.entries = {};
        frame.entries.forEach(function (row) { state.entries[row.escalation_id] = row; });
        if (frame.agent) $("presence").value = frame.agent.presence;
        renderQueue();
      } else if (frame.type === "entry") {
        state.entries[frame.entry.escalation_id] = frame.entry;
        renderQueue();
        if (frame.entry.escalation_id === state.openId) refreshDetail();
      } else if (frame.type === "removed") {
        delete state.entries[frame.escalation_id];
        if (frame.escalation_id === state.openId) closePanel("This conversation has left your queue (resolved or transferred).");
        renderQueue();
      } else if (frame.type === "agent") {
        if (state.me && frame.agent.agent_id === state.me.agent_id) $("presence").value = frame.agent.presence;
      } else if (frame.type === "error") {
        if (frame.status === 401) signedOut(frame.error);
        else toast(frame.error, true);
      }
    };
    socket.onclose = function (event) {
      $("live").hidden = true;
      if (event.code === 4401) { signedOut("your session ended; sign in again"); return; }
      if (!state.me) return;
      var delay = Math.min(15000, 300 * Math.pow(2, state.attempts++));
      setTimeout(function () { if (state.me) connect(); }, delay);
    };
  }

  function waited(iso) {
    var seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function queueRow(row) {
    var div = el("div", "queue-row" + (row.escalation_id === state.openId ? " open" : ""));
    div.setAttribute("data-escalation-id", row.escalation_id);
    div.setAttribute("data-status", row.status);
    var top = el("div", "top");
    top.appendChild(el("span", "who", row.customer_name));
    if (row.vip_tier && row.vip_tier !== "standard") top.appendChild(el("span", "badge vip", row.vip_tier));
    if (row.needs_approval) top.appendChild(el("span", "badge approval", "approval"));
    top.appendChild(el("span", "badge " + row.priority, row.priority));
    div.appendChild(top);
    div.appendChild(el("div", "text", row.text));
    var meta = row.reason + " · " + row.channel + " · " + row.queue + " · " + waited(row.enqueued_at);
    if (row.status === "assigned" && row.agent_id && (!state.me || row.agent_id !== state.me.agent_id)) {
      meta += " · with " + row.agent_id;
    }
    if (row.status === "waiting" && row.position) meta += " · #" + row.position;
    if (row.follow_ups) meta += " · +" + row.follow_ups + " new";
    div.appendChild(el("div", "meta", meta));
    div.addEventListener("click", function () { openEntry(row.escalation_id); });
    return div;
  }

  function renderQueue() {
    var mine = [], others = [], waiting = [];
    Object.keys(state.entries).forEach(function (id) {
      var row = state.entries[id];
      if (row.status === "resolved") return;
      if (row.status === "waiting") waiting.push(row);
      else if (state.me && row.agent_id === state.me.agent_id) mine.push(row);
      else others.push(row);
    });
    var byScore = function (a, b) { return b.priority_score - a.priority_score || a.enqueued_at.localeCompare(b.enqueued_at); };
    [[mine, "queue-mine"], [others, "queue-others"], [waiting, "queue-waiting"]].forEach(function (pair) {
      var box = $(pair[1]);
      box.textContent = "";
      pair[0].sort(byScore).forEach(function (row) { box.appendChild(queueRow(row)); });
      if (!pair[0].length) box.appendChild(el("div", "empty", "nothing here"));
    });
  }

  // ---- the conversation panel ---------------------------------------------------------------

  function openEntry(id) {
    state.openId = id;
    state.detail = null;
    var panel = $("conversation");
    panel.textContent = "";
    panel.appendChild($("conversation-template").content.cloneNode(true));
    wirePanel();
    renderQueue();
    refreshDetail();
  }

  function closePanel(message) {
    state.openId = null;
    state.detail = null;
    var panel = $("conversation");
    panel.textContent = "";
    panel.appendChild(el("p", "placeholder", message));
  }

  var refreshing = null;
  function refreshDetail() {
    var id = state.openId;
    if (!id) return Promise.resolve();
    if (refreshing) return refreshing;
    refreshing = call("GET", "/entries/" + encodeURIComponent(id)).then(function (detail) {
      if (state.openId === id) { state.detail = detail; renderDetail(detail); }
    }).catch(function (error) {
      if (state.openId === id) closePanel(error.message);
    }).then(function () { refreshing = null; });
    return refreshing;
  }

  function define(dl, rows) {
    dl.textContent = "";
    rows.forEach(function (pair) {
      if (pair[1] === undefined || pair[1] === null || pair[1] === "") return;
      dl.appendChild(el("dt", null, pair[0]));
      dl.appendChild(el("dd", null, pair[1]));
    });
  }

  function trendSvg(values) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "trend");
    svg.setAttribute("viewBox", "0 0 100 40");
    svg.setAttribute("preserveAspectRatio", "none");
    var zero = document.createElementNS(ns, "line");
    zero.setAttribute("x1", "0"); zero.setAttribute("x2", "100"); zero.setAttribute("y1", "20"); zero.setAttribute("y2", "20");
    zero.setAttribute("stroke", "#ccd"); zero.setAttribute("stroke-dasharray", "2,2");
    svg.appendChild(zero);
    if (values.length) {
      var step = values.length > 1 ? 100 / (values.length - 1) : 0;
      var points = values.map(function (v, i) { return (i * step).toFixed(1) + "," + (20 - v * 18).toFixed(1); });
      var line = document.createElementNS(ns, "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", values[values.length - 1] < -0.05 ? "#b91c1c" : "#1f4e8c");
      line.setAttribute("stroke-width", "1.5");
      svg.appendChild(line);
    }
    return svg;
  }

  function renderDetail(detail) {
    var entry = detail.entry, esc = entry.escalation, summary = detail.summary;
    $("conv-status").textContent = entry.status + (entry.agent_id ? " · " + entry.agent_id : "");
    define($("conv-why"), [
      ["reason", esc.reason],
      ["detail", esc.detail],
      ["priority", esc.priority + " (score " + entry.priority_score.toFixed(1) + ")"],
      ["queue", entry.queue + " · skill " + entry.skill + " · " + entry.language],
      ["channel", summary.channel + " · " + entry.recipient],
      ["waiting", waited(entry.enqueued_at) + (detail.position ? " · #" + detail.position + " in line" : "") +
        (detail.expected_wait_s != null ? " · ~" + Math.round(detail.expected_wait_s) + " s expected" : "")],
      ["transfers", entry.transfers.map(function (t) {
        return (t.from || "queue") + " → " + (t.to || t.to_queue) + (t.warm ? " (warm)" : "");
      }).join("; ")],
    ]);
    var profile = esc.profile || {};
    var lifetime = profile.lifetime || {};
    define($("conv-profile"), [
      ["name", profile.display_name || entry.customer_id],
      ["customer", entry.customer_id],
      ["tier", profile.vip_tier],
      ["language", profile.language || entry.language],
      ["contacts", (profile.contacts || []).map(function (c) { return c.channel + " " + c.address; }).join(", ")],
      ["orders", lifetime.orders ? lifetime.orders + " · " + lifetime.total_spent + " " + lifetime.currency : ""],
      ["notes", lifetime.notes],
      ["slots", Object.keys(esc.slots || {}).map(function (k) { return k + "=" + esc.slots[k]; }).join(", ")],
    ]);
    var nlu = esc.nlu || {};
    define($("conv-nlu"), [
      ["intent", nlu.intent ? nlu.intent + " (" + (nlu.confidence * 100).toFixed(0) + "%)" : "—"],
      ["task", esc.task_intent],
      ["model", nlu.model_used],
      ["entities", (nlu.entities || []).map(function (e) { return e.type + ": " + e.value; }).join(", ")],
      ["sentiment", nlu.sentiment ? nlu.sentiment.label + " (" + nlu.sentiment.score.toFixed(2) + ")" : ""],
      ["recommended", (esc.recommended_actions || []).join(", ")],
    ]);
    var trend = $("conv-trend");
    trend.textContent = "";
    trend.appendChild(trendSvg(detail.sentiment_trend || []));
    trend.appendChild(el("div", "meta", (detail.sentiment_trend || []).map(function (v) { return v.toFixed(2); }).join(" → ")));
    renderPassages(detail);
    renderTranscript(detail);
    renderPrepared(detail);
    renderManage(detail);
  }

  // ---- the knowledge base: what it found for a hand-over, and a supervisor's own searches --------

  // A link only to a web page: an article's url comes from an ingested source, and a javascript: url would run here.
  function titleNode(title, url) {
    if (typeof url !== "string" || !/^https?:\/\//i.test(url)) return el("strong", null, title);
    var link = el("a", null, title);
    link.href = url;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    return link;
  }

  function shorten(text, limit) {
    var flat = String(text).replace(/\s+/g, " ").trim();
    return flat.length <= limit ? flat : flat.slice(0, limit - 1) + "…";
  }

  function passageNode(passage, cls) {
    var div = el("div", cls);
    var top = el("div", "top");
    top.appendChild(titleNode(passage.title, passage.url));
    top.appendChild(el("span", "badge", "score " + passage.score.toFixed(3)));
    div.appendChild(top);
    div.appendChild(el("div", "text", shorten(passage.text, 280)));
    return div;
  }

  function renderPassages(detail) {
    var passages = detail.passages || [];
    $("passages-card").hidden = !passages.length;
    var box = $("passages");
    box.textContent = "";
    passages.forEach(function (passage) { box.appendChild(passageNode(passage, "passage")); });
  }

  function previewArticle(docId) {
    // doc ids are paths or URLs: one encoded segment, which the server reads back whole
    call("GET", "/knowledge/articles/" + encodeURIComponent(docId)).then(function (article) {
      var title = $("kb-article-title");
      title.textContent = "";
      title.appendChild(titleNode(article.title, article.url));
      define($("kb-article-meta"), [
        ["id", article.doc_id],
        ["section", article.section],
        ["domain", article.domain],
        ["release", article.release || "not in a live release"],
        ["updated", article.updated_at ? new Date(article.updated_at).toLocaleDateString() : ""],
      ]);
      $("kb-article-text").textContent = article.text;
      $("kb-article-uses").textContent = "";
      $("kb-article-more").hidden = true;
      if (!$("kb-article").open) $("kb-article").showModal();
      loadArticleUses(docId, 0);
    }).catch(function (error) { toast(error.message, true); });
  }

  // The conversations whose replies cited the article or whose hand-overs carried it, newest first, a page
  // at a time; one that went to a human opens its hand-over here (the workspace knows conversations by those).
  function loadArticleUses(docId, offset) {
    var box = $("kb-article-uses"), more = $("kb-article-more");
    more.hidden = true;
    var path = "/knowledge/articles/" + encodeURIComponent(docId) + "/conversations?offset=" + offset;
    call("GET", path).then(function (page) {
      if (!page.total) box.appendChild(el("div", "empty", "no conversation used it yet"));
      page.conversations.forEach(function (use) { box.appendChild(articleUseNode(use)); });
      if (page.next_offset !== null) {
        more.hidden = false;
        more.textContent = "more (" + (page.total - page.next_offset) + ")";
        more.onclick = function () { loadArticleUses(docId, page.next_offset); };
      }
    }).catch(function (error) { box.appendChild(el("div", "error", error.message)); });
  }

  function articleUseNode(use) {
    var div = el("div", "kb-use");
    div.setAttribute("data-conversation-id", use.conversation_id);
    div.appendChild(el("span", "when", new Date(use.at).toLocaleString()));
    div.appendChild(el("span", "badge " + use.outcome, use.outcome === "answered" ? "answered" : "handed over"));
    div.appendChild(el("span", "meta", use.channel + " · " + (use.intent || "—")));
    if (use.escalation_id) {
      var link = el("a", "open-conversation", use.conversation_id);
      link.href = "#";
      link.addEventListener("click", function (event) {
        event.preventDefault();
        $("kb-article").close();
        openEntry(use.escalation_id);
      });
      div.appendChild(link);
    } else {
      div.appendChild(el("span", "conversation", use.conversation_id));
    }
    return div;
  }

  $("kb-search").addEventListener("submit", function (event) {
    event.preventDefault();
    var box = $("kb-results");
    box.textContent = "";
    box.appendChild(el("div", "meta", "searching…"));
    call("GET", "/knowledge/search?q=" + encodeURIComponent($("kb-query").value)).then(function (result) {
      box.textContent = "";
      box.appendChild(el("div", "meta", result.answerable ? "the agent would answer from these"
        : "the agent would hand this question to a human"));
      if (!result.passages.length) box.appendChild(el("div", "empty", "nothing found"));
      result.passages.forEach(function (passage) {
        var div = passageNode(passage, "kb-result");
        var button = el("button", "kb-preview", "preview article");
        button.type = "button";
        button.addEventListener("click", function () { previewArticle(passage.doc_id); });
        div.appendChild(button);
        box.appendChild(div);
      });
    }).catch(function (error) {
      box.textContent = "";
      box.appendChild(el("div", "error", error.message));
    });
  });

  function renderTranscript(detail) {
    var box = $("conv-history");
    var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.textContent = "";
    detail.transcript.forEach(function (item) {
      var div = el("div", "msg msg-" + item.role);
      div.setAttribute("data-id", item.id);
      var who = { customer: "customer", agent: "AI agent", human: "human agent", system: "notice" }[item.role] || item.role;
      div.appendChild(el("span", "by", who + " · " + new Date(item.at).toLocaleTimeString() +
        (item.escalated ? " · handed over: " + item.escalated : "")));
      div.appendChild(document.createTextNode(item.text));
      if (item.role === "agent") div.appendChild(ratingTools(item));
      if (item.role === "customer" && item.intent) div.appendChild(intentTools(item));
      box.appendChild(div);
    });
    if (atBottom || state.scrolledFor !== state.openId) { box.scrollTop = box.scrollHeight; state.scrolledFor = state.openId; }
  }

  function ratingTools(item) {
    var tools = el("div", "tools");
    tools.appendChild(el("span", null, "rate:"));
    var send = function (rating) {
      act("rate", "rate:" + item.id + ":" + rating, { message_id: item.id, rating: rating }).then(function () {
        tools.textContent = "";
        tools.appendChild(el("span", "done", "rated " + rating + "/5 — thanks"));
      }).catch(function () {});
    };
    var up = el("button", "thumb-up", "good"); up.title = "a good reply (5 of 5)";
    up.addEventListener("click", function () { send(5); });
    var down = el("button", "thumb-down", "bad"); down.title = "a bad reply (1 of 5)";
    down.addEventListener("click", function () { send(1); });
    tools.appendChild(up); tools.appendChild(down);
    [1, 2, 3, 4, 5].forEach(function (n) {
      var b = el("button", "rate-" + n, String(n));
      b.addEventListener("click", function () { send(n); });
      tools.appendChild(b);
    });
    return tools;
  }

  function intentTools(item) {
    var tools = el("div", "tools");
    tools.appendChild(el("span", null, "intent " + item.intent + " — actually:"));
    var select = el("select", "intent-select");
    select.setAttribute("aria-label", "Correct intent");
    ((state.directory && state.directory.intents) || []).forEach(function (intent) {
      var option = el("option", null, intent);
      option.value = intent;
      if (intent === item.intent) option.selected = true;
      select.appendChild(option);
    });
    var button = el("button", "intent-send", "correct");
    button.addEventListener("click", function () {
      act("correct-intent", "intent:" + item.id + ":" + select.value,
          { message_id: item.id, corrected_intent: select.value }).then(function () {
        tools.textContent = "";
        tools.appendChild(el("span", "done", "intent corrected to " + select.value));
      }).catch(function () {});
    });
    tools.appendChild(select); tools.appendChild(button);
    return tools;
  }

  function renderPrepared(detail) {
    var card = $("prepared-card");
    var actions = detail.prepared_actions || [];
    card.hidden = !actions.length;
    var box = $("prepared");
    box.textContent = "";
    actions.forEach(function (step) {
      var div = el("div", "action");
      div.appendChild(el("strong", null, step.name + (step.writes ? " (write)" : " (check)")));
      div.appendChild(el("div", null, Object.keys(step.arguments).map(function (k) {
        return k + " = " + step.arguments[k];
      }).join(", ")));
      div.appendChild(el("code", null, "key " + step.idempotency_key));
      box.appendChild(div);
    });
    var decision = detail.decision;
    var line = $("decision");
    line.className = decision ? decision.decision : "";
    line.textContent = decision ? decision.decision + " by " + decision.agent_id + " — outcome: " + decision.outcome : "";
    var done = !!decision && (decision.decision === "rejected" || decision.outcome === "succeeded");
    $("approve").disabled = done || !detail.may_act;
    $("reject").disabled = done || !detail.may_act;
  }

  function renderManage(detail) {
    var open = detail.entry.status !== "resolved";
    ["reply-send", "transfer-send", "resolve-send"].forEach(function (id) { $(id).disabled = !open || !detail.may_act; });
    $("reply-channel").textContent = detail.may_act ? "goes to the customer by " + detail.summary.channel
      : "read only: this conversation is not assigned to you";
    var target = $("transfer-target");
    if (!target.options.length && state.directory) {
      state.directory.agents.forEach(function (a) {
        if (state.me && a.agent_id === state.me.agent_id) return;
        var option = el("option", null, "agent " + (a.display_name || a.agent_id) + " (" + a.presence + ")");
        option.value = "agent:" + a.agent_id;
        target.appendChild(option);
      });
      state.directory.queues.forEach(function (q) {
        var option = el("option", null, "queue " + q);
        option.value = "queue:" + q;
        target.appendChild(option);
      });
      state.directory.resolution_codes.forEach(function (code) {
        var option = el("option", null, code.replace(/_/g, " "));
        option.value = code;
        $("resolve-code").appendChild(option);
      });
    }
  }

  function wirePanel() {
    $("reply-send").addEventListener("click", function () {
      var text = $("reply-text").value.trim();
      if (!text) return;
      var button = $("reply-send");
      button.disabled = true;
      act("reply", "reply:" + state.openId + ":" + text, { text: text }).then(function () {
        $("reply-text").value = "";
        toast("reply sent");
        return refreshDetail();
      }).catch(function () {}).then(function () { button.disabled = false; });
    });
    $("approve").addEventListener("click", function () {
      $("approve").disabled = true;
      act("approve", "approve:" + state.openId).then(function (result) {
        toast("approved: " + result.outcome);
        return refreshDetail();
      }).catch(function () { $("approve").disabled = false; });
    });
    $("reject").addEventListener("click", function () {
      act("reject", "reject:" + state.openId, { note: $("reject-note").value }).then(function () {
        toast("rejected");
        return refreshDetail();
      }).catch(function () {});
    });
    $("transfer-send").addEventListener("click", function () {
      var value = $("transfer-target").value || "";
      var fields = { warm: $("transfer-warm").checked };
      if (value.indexOf("agent:") === 0) fields.to_agent = value.slice(6); else fields.to_queue = value.slice(6);
      act("transfer", "transfer:" + state.openId + ":" + value, fields).then(function () {
        toast("transfer sent to the router");
      }).catch(function () {});
    });
    $("resolve-send").addEventListener("click", function () {
      var code = $("resolve-code").value;
      act("resolve", "resolve:" + state.openId, { resolution_code: code, comment: $("resolve-comment").value })
        .then(function () { toast("resolved: " + code); })
        .catch(function () {});
    });
  }

  // The transcript also gains messages the queue row does not announce (a notice, a colleague's reply).
  setInterval(function () { if (state.openId && state.me && !document.hidden) refreshDetail(); }, 4000);
  setInterval(function () { if (state.me) renderQueue(); }, 30000);  // waiting times

  call("GET", "/me").then(start).catch(function () { showLogin(""); });
})();
