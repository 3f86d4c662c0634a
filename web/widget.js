/*
 * supportflow web chat widget: one script tag, no build step.
 *
 *   <script src="https://support.example.com/web/widget.js" defer
 *           data-customer-token="eyJ..."         (optional: a JWT your backend minted for the signed-in customer)
 *           data-title="Help"></script>
 *
 * It opens a WebSocket to /v1/chat on the script's own origin (the protocol and the token claims
 * are documented in connectors/channels/webchat.py), keeps the session token (a JWT) in
 * localStorage so a reload or a reconnect resumes the same conversation with its history,
 * reconnects with backoff, shows a typing indicator while the agent works, and renders every text
 * as text (never as HTML). A reply a language model writes grows in its bubble as it is generated
 * (`reply.delta` frames); the final reply takes the same bubble with its own, checked text. A refused session token (expired, another key) is dropped and a new
 * session started; a refused customer token falls back to the stored session, else to a guest one.
 *
 * Logout ("End chat" in its header, or window.supportflowChat.logout() from the host page when its
 * user signs out) revokes the session on the server, forgets the stored token and the page's
 * customer token, clears the conversation from the screen, and starts a fresh guest session: a
 * shared device keeps neither the identity nor the history. It returns a Promise settled once the
 * server confirmed (or at once when offline: the stored token is gone either way).
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var origin = new URL(script.src, window.location.href);
  var wsUrl = (origin.protocol === "https:" ? "wss://" : "ws://") + origin.host + "/v1/chat";
  var customerToken = script.getAttribute("data-customer-token") || null;
  var storeKey = "supportflow.session." + origin.host;
  var socket = null;
  var attempts = 0;
  var shown = {};
  var streaming = {}; // message id -> the bubble its reply grows in, until the final reply arrives
  var outbox = [];
  var loggedOut = null; // the pending logout's resolve, until the server says logged_out

  var css =
    "#sf-chat{position:fixed;bottom:16px;right:16px;width:340px;max-height:480px;display:flex;" +
    "flex-direction:column;font:14px/1.4 system-ui,sans-serif;background:#fff;border:1px solid #ccd;" +
    "border-radius:10px;box-shadow:0 4px 16px rgba(0,0,0,.15);z-index:2147483000}" +
    "#sf-chat header{display:flex;justify-content:space-between;padding:10px 12px;background:#1f4e8c;color:#fff;" +
    "border-radius:10px 10px 0 0;font-weight:600}" +
    "#sf-logout{border:0;background:transparent;color:#fff;font:inherit;font-size:12px;cursor:pointer;opacity:.85}" +
    "#sf-log{flex:1;overflow-y:auto;padding:10px;min-height:200px}" +
    ".sf-msg{margin:6px 0;padding:7px 10px;border-radius:8px;max-width:85%;white-space:pre-wrap;word-wrap:break-word}" +
    ".sf-customer{background:#e6eefb;margin-left:auto}.sf-agent{background:#f1f1f1}" +
    ".sf-note{color:#666;font-style:italic;font-size:12px}" +
    "#sf-typing{padding:0 12px 6px;color:#666;font-size:12px;min-height:16px}" +
    "#sf-chat form{display:flex;border-top:1px solid #ddd}" +
    "#sf-input{flex:1;border:0;padding:10px;font:inherit;border-radius:0 0 0 10px}" +
    "#sf-send{border:0;background:#1f4e8c;color:#fff;padding:0 14px;border-radius:0 0 10px 0;cursor:pointer}";

  var box = document.createElement("section");
  box.id = "sf-chat";
  box.setAttribute("aria-label", "Customer support chat");
  box.innerHTML =
    '<style>' + css + '</style><header><span id="sf-title"></span>' +
    '<button id="sf-logout" type="button" title="End the chat and forget it on this device">End chat</button>' +
    '</header><div id="sf-log" aria-live="polite"></div>' +
    '<div id="sf-typing"></div><form><input id="sf-input" autocomplete="off" maxlength="4000" ' +
    'placeholder="Type your message…" aria-label="Message"><button id="sf-send" type="submit">Send</button></form>';
  box.querySelector("#sf-title").textContent = script.getAttribute("data-title") || "Customer support";
  var log = box.querySelector("#sf-log");
  var typing = box.querySelector("#sf-typing");
  var input = box.querySelector("#sf-input");

  function add(kind, text, id) {
    if (id && shown[id]) return;
    if (id) shown[id] = true;
    var div = document.createElement("div");
    div.className = "sf-msg sf-" + kind;
    div.textContent = text; // text only: a reply can never inject markup into the host page
    if (id) div.setAttribute("data-id", id);
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
  }

  // a preview of the reply to `replyTo` as the model writes it; the final reply replaces its text
  function grow(replyTo, text, restart) {
    if (!replyTo || shown["answer:" + replyTo]) return; // the final reply is here: late pieces are ignored
    var div = streaming[replyTo];
    if (!div) {
      div = document.createElement("div");
      div.className = "sf-msg sf-agent sf-streaming";
      div.setAttribute("data-reply-to", replyTo);
      streaming[replyTo] = div;
      log.appendChild(div);
    }
    if (restart) div.textContent = "";
    else div.textContent += text; // text only, as every reply
    log.scrollTop = log.scrollHeight;
  }

  function settle(item) {
    var replyTo = item.in_reply_to;
    if (replyTo) shown["answer:" + replyTo] = true;
    var div = replyTo && streaming[replyTo];
    if (!div) return false;
    delete streaming[replyTo];
    if (item.kind !== "reply" || (item.id && shown[item.id])) {
      div.remove(); // handed to a human instead (or already on screen): the preview goes
      return false;
    }
    shown[item.id] = true;
    div.className = "sf-msg sf-agent";
    div.textContent = item.text; // the final, checked text: it may differ from the preview
    div.setAttribute("data-id", item.id);
    return true;
  }

  function render(item) {
    if (item.kind !== "message" && settle(item)) return;
    if (item.kind === "message") add("customer", item.text, item.id);
    else if (item.kind === "reply") add("agent", item.text, item.id);
    // a follow-up while a colleague has the conversation is not announced again
    else if (item.kind === "escalation" && item.reason !== "with_human") add("note", "A colleague will take it from here.", item.id);
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(frame));
    else outbox.push(frame);
  }

  function connect() {
    socket = new WebSocket(wsUrl);
    var useCustomerToken = !!customerToken;
    function hello() {
      var frame = { type: "hello" };
      var stored = localStorage.getItem(storeKey);
      if (stored) frame.token = stored;
      if (useCustomerToken) frame.customer_token = customerToken;
      socket.send(JSON.stringify(frame));
    }
    socket.onopen = function () {
      attempts = 0;
      hello();
    };
    socket.onmessage = function (event) {
      var frame = JSON.parse(event.data);
      if (frame.type === "welcome") {
        localStorage.setItem(storeKey, frame.token);
        box.setAttribute("data-session", frame.customer_id ? "customer" : "guest"); // for the host page's styles
        frame.history.forEach(render);
        while (outbox.length) socket.send(JSON.stringify(outbox.shift()));
      } else if (frame.type === "logged_out") {
        forget();
        hello(); // a fresh guest session: nothing of the previous one
        if (loggedOut) loggedOut();
        loggedOut = null;
      } else if (frame.type === "ack") {
        shown[frame.message_id] = true;
      } else if (frame.type === "typing") {
        typing.textContent = "The agent is typing…";
      } else if (frame.type === "reply.delta" || frame.type === "reply.restart") {
        grow(frame.reply_to, frame.text || "", frame.type === "reply.restart");
      } else if (frame.type === "reply" || frame.type === "escalation") {
        typing.textContent = "";
        render(frame);
      } else if (frame.type === "error" && /^session_token_/.test(frame.code || "")) {
        localStorage.removeItem(storeKey); // expired or signed with another key: start a new session
        hello();
      } else if (frame.type === "error" && /^customer_/.test(frame.code || "") && useCustomerToken) {
        useCustomerToken = false; // the stored session (bound to the customer) or a guest session instead
        if (!localStorage.getItem(storeKey)) add("note", "Sign-in not accepted (" + frame.error + "); chatting as a guest.");
        hello();
      } else if (frame.type === "error") {
        typing.textContent = "";
        add("note", frame.error);
      }
    };
    function forget() {
      localStorage.removeItem(storeKey);
      customerToken = null;
      useCustomerToken = false;
      shown = {};
      streaming = {};
      outbox = [];
      log.textContent = "";
      typing.textContent = "";
      box.removeAttribute("data-session");
    }
    forgetAll = forget;
    socket.onclose = function () {
      var delay = Math.min(30000, 500 * Math.pow(2, attempts++));
      setTimeout(connect, delay);
    };
  }

  var forgetAll = function () {};

  function logout() {
    return new Promise(function (resolve) {
      if (socket && socket.readyState === WebSocket.OPEN && localStorage.getItem(storeKey)) {
        loggedOut = resolve;
        socket.send(JSON.stringify({ type: "logout" }));
      } else {
        forgetAll(); // offline: the server cannot be told, but this device forgets the session
        resolve();
      }
    });
  }
  window.supportflowChat = { logout: logout };
  box.querySelector("#sf-logout").addEventListener("click", function () { logout(); });

  box.querySelector("form").addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (!text) return;
    input.value = "";
    var clientId = Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
    add("customer", text);
    send({ type: "message", text: text, client_message_id: clientId });
  });

  function start() {
    document.body.appendChild(box);
    connect();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
