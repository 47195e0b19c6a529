/* Stablegate hosted checkout (design 0007). No framework, no bundle, no inline code: the
 * page's data arrives in data-* attributes, the strings in data-messages (the server's
 * catalogue), so a translation never touches this file.
 *
 * 1. option picker and quote countdowns;
 * 2. live status: polls /pay/{id}/status with backoff (1 s growing to 5 s, reset on a
 *    change, paused while the tab is hidden);
 * 3. transfer: copy buttons;
 * 4. wallet (EIP-1193): connect, switch chain, check the balance, then permit or approve,
 *    then PaymentRouter.pay — calldata encoded here by hand (the intent is 7 static words).
 */
(function () {
  "use strict";

  var root = document.getElementById("checkout");
  if (!root) return;

  var MIN_DELAY_MS = 1000;
  var MAX_DELAY_MS = 5000;
  var DELAY_GROWTH = 1.5;
  var REDIRECT_DELAY_MS = 2500;
  var RECEIPT_POLL_MS = 1000;
  var RECEIPT_MAX_POLLS = 600; // ten minutes; after that the status polling still watches
  var OPEN_STATES = ["waiting", "seen", "underpaid"];
  var FINAL_STATES = ["paid", "late"];

  // Function selectors (first 4 bytes of keccak256 of the signature): tests/checkout
  // checks each against contracts/artifacts so a changed ABI cannot slip by.
  var SEL = {
    balanceOf: "0x70a08231",
    allowance: "0xdd62ed3e",
    approve: "0x095ea7b3",
    pay: "0x54c5b595",
    payWithPermit: "0xc1496032",
    permitTypehash: "0x30adf81f",
    name: "0x06fdde03",
    version: "0x54fd4d50",
    nonces: "0x7ecebe00"
  };
  // keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)")
  var EIP2612_TYPEHASH = "0x6e71edae12b1b97f4d1f60370fef10105fa2faae0126114a169c64845d6126c9";

  var messages = JSON.parse(root.dataset.messages);
  var statusUrl = root.dataset.statusUrl;
  var current = JSON.parse(root.dataset.status);
  var skewS = current.now - Date.now() / 1000; // server clock minus ours
  var panels = Array.prototype.slice.call(root.querySelectorAll("section.option"));
  var statusBox = document.getElementById("status");
  var redirecting = false;

  function t(key, values) {
    var text = messages[key] || key;
    return text.replace(/\{(\w+)\}/g, function (whole, name) {
      return values && name in values ? String(values[name]) : whole;
    });
  }

  function nowS() {
    return Date.now() / 1000 + skewS;
  }

  // --- picker and countdowns -----------------------------------------------------------

  function selected() {
    var radio = root.querySelector('input[name="option"]:checked');
    return radio ? Number(radio.value) : 0;
  }

  function showSelected() {
    var position = selected();
    panels.forEach(function (p) { p.hidden = Number(p.dataset.position) !== position; });
    render(current);
  }

  function clock(seconds) {
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }

  function tick() {
    panels.forEach(function (p) {
      var left = Math.max(0, Math.floor(Number(p.dataset.quoteExpiresAt) - nowS()));
      var time = p.querySelector(".remaining");
      time.textContent = clock(left);
      time.setAttribute("datetime", "PT" + left + "S");
      p.querySelector(".countdown").hidden = left <= 0;
      p.querySelector(".quote-expired").hidden = left > 0;
      var button = p.querySelector(".pay-wallet");
      if (button && left <= 0) button.disabled = true; // the router refuses a stale intent
    });
  }

  // --- live status ---------------------------------------------------------------------

  function statusText(s) {
    if (s.state === "seen") {
      var r = s.receipts.filter(function (x) { return x.status === "seen"; })[0];
      if (r.confirmations_required === null) {
        return t("status_seen_unknown_depth", { chain: r.chain, confirmations: r.confirmations });
      }
      return t("status_seen", {
        chain: r.chain,
        confirmations: Math.min(r.confirmations, r.confirmations_required),
        required: r.confirmations_required
      });
    }
    if (s.state === "underpaid") {
      var o = s.options[selected()] || s.options[0];
      return t("status_underpaid", { missing: o.missing, asset: o.asset });
    }
    if (s.state === "paid" && s.success_url) return t("status_paid_redirect");
    return t("status_" + s.state);
  }

  // Once part has arrived, each option asks for what is missing only (the amount, the
  // QR code and the wallet link), and the wallet is hidden: its signed intent is for the
  // whole price, so the rest goes by transfer to the same address.
  function showAmounts(s) {
    var partial = s.options.some(function (o) { return o.received_units !== "0"; });
    panels.forEach(function (p) {
      var o = s.options[Number(p.dataset.position)];
      var amount = partial ? o.missing : p.dataset.amount;
      var units = partial ? o.missing_units : p.dataset.amountUnits;
      p.querySelector(".send-label").textContent = t(partial ? "left_to_send" : "you_send");
      p.querySelector(".token-amount").textContent = amount + " " + p.dataset.asset;
      p.querySelector(".transfer-amount").value = amount;
      var wallet = p.querySelector(".wallet");
      if (wallet) wallet.hidden = partial;
      var qr = p.querySelector("img.qr");
      var uri = qr.dataset.uri.replace(/uint256=\d+$/, "uint256=" + units);
      if (uri === qr.dataset.uri) return;
      qr.dataset.uri = uri;
      qr.src = qr.src.split("?")[0] + "?units=" + units; // the server draws what is missing now
      qr.alt = t("qr_alt", {
        amount: amount, asset: p.dataset.asset, chain: p.dataset.chain,
        address: p.querySelector(".deposit-address").value
      });
      p.querySelector(".wallet-link").href = uri;
    });
    return s.options.some(function (o) { return o.missing_units !== "0"; });
  }

  function render(s) {
    var text = statusText(s);
    // Only a changed text is written: screen readers announce every write to the region.
    if (statusBox.textContent !== text) statusBox.textContent = text;
    statusBox.className = "status status-" + s.state;
    root.dataset.state = s.state;
    var missing = showAmounts(s);
    document.getElementById("pay-area").hidden = OPEN_STATES.indexOf(s.state) < 0 || !missing;
    var next = document.getElementById("continue");
    if (next) next.hidden = s.state !== "paid";
    var again = document.getElementById("start-again");
    if (again) again.hidden = s.state !== "expired" && s.state !== "canceled";
    if (s.state === "paid" && s.success_url && !redirecting) {
      redirecting = true;
      window.setTimeout(function () { window.location.assign(s.success_url); }, REDIRECT_DELAY_MS);
    }
  }

  var delayMs = MIN_DELAY_MS;
  var timer = null;

  function fingerprint(s) {
    var copy = Object.assign({}, s);
    delete copy.now;
    return JSON.stringify(copy);
  }

  function schedule(ms) {
    window.clearTimeout(timer);
    timer = null;
    if (document.hidden || FINAL_STATES.indexOf(current.state) >= 0) return;
    timer = window.setTimeout(poll, ms);
  }

  function poll() {
    timer = null;
    fetch(statusUrl, { cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (next) {
        document.getElementById("connection").hidden = true;
        skewS = next.now - Date.now() / 1000;
        if (fingerprint(next) !== fingerprint(current)) {
          current = next;
          delayMs = MIN_DELAY_MS;
          render(next);
        } else {
          delayMs = Math.min(MAX_DELAY_MS, delayMs * DELAY_GROWTH);
        }
      })
      .catch(function () {
        // A quiet note, never a blank page: the last known status stays on screen.
        document.getElementById("connection").hidden = false;
        delayMs = Math.min(MAX_DELAY_MS, delayMs * DELAY_GROWTH);
      })
      .then(function () { schedule(delayMs); });
  }

  function pollSoon() {
    delayMs = MIN_DELAY_MS;
    schedule(0);
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      window.clearTimeout(timer);
      timer = null;
    } else {
      pollSoon();
    }
  });

  // --- transfer: copy buttons ----------------------------------------------------------

  function copy(button) {
    var input = document.getElementById(button.dataset.copy);
    var note = button.closest("section.transfer").querySelector(".copy-status");
    function done(ok) { note.textContent = t(ok ? "copied" : "copy_failed"); }
    function fallback() {
      input.focus();
      input.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      done(ok);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () { done(true); }, fallback);
    } else {
      fallback();
    }
  }

  // --- ABI encoding --------------------------------------------------------------------

  function strip(hex) {
    return hex.replace(/^0x/, "").toLowerCase();
  }

  function word(hex) {
    var h = strip(hex);
    if (h.length > 64 || !/^[0-9a-f]*$/.test(h)) throw new Error("bad word " + hex);
    return h.padStart(64, "0");
  }

  function uint(value) {
    return BigInt(value).toString(16).padStart(64, "0");
  }

  function encodeIntent(i) {
    return word(i.id) + word(i.token) + uint(i.amount) + uint(i.fee) + word(i.recipient) +
      word(i.feeRecipient) + uint(i.deadline);
  }

  function encodeBytes(hex) {
    var h = strip(hex);
    var length = h.length / 2;
    return uint(length) + h.padEnd(Math.ceil(length / 32) * 64, "0");
  }

  // pay(Intent, bytes): the tuple inline (static), then the offset of the dynamic bytes.
  function encodePay(o) {
    var headWords = 7 + 1;
    return SEL.pay + encodeIntent(o.intent) + uint(headWords * 32) + encodeBytes(o.signature);
  }

  // payWithPermit(Intent, bytes, uint256 deadline, uint8 v, bytes32 r, bytes32 s).
  function encodePayWithPermit(o, deadline, signature) {
    var sig = strip(signature);
    var v = parseInt(sig.slice(128, 130), 16);
    if (v < 27) v += 27;
    var headWords = 7 + 1 + 4;
    return SEL.payWithPermit + encodeIntent(o.intent) + uint(headWords * 32) + uint(deadline) + uint(v) +
      sig.slice(0, 64) + sig.slice(64, 128) + encodeBytes(o.signature);
  }

  function decodeString(hex) {
    var h = strip(hex);
    var offset = parseInt(h.slice(0, 64), 16) * 2;
    var length = parseInt(h.slice(offset, offset + 64), 16);
    var body = h.slice(offset + 64, offset + 64 + length * 2);
    var bytes = new Uint8Array(length);
    for (var i = 0; i < length; i++) bytes[i] = parseInt(body.slice(2 * i, 2 * i + 2), 16);
    return new TextDecoder().decode(bytes);
  }

  function formatUnits(units, decimals) {
    var digits = units.toString().padStart(decimals + 1, "0");
    var whole = digits.slice(0, digits.length - decimals);
    var fraction = digits.slice(digits.length - decimals).replace(/0+$/, "");
    while (fraction.length < 2 && decimals >= 2) fraction += "0";
    return fraction ? whole + "." + fraction : whole;
  }

  // --- wallet --------------------------------------------------------------------------

  function WalletError(key, values) {
    this.key = key;
    this.values = values || {};
  }

  function optionData(p) {
    var signed = JSON.parse(p.dataset.intent);
    return {
      chain: p.dataset.chain,
      chainId: Number(p.dataset.chainId),
      asset: p.dataset.asset,
      token: p.dataset.token,
      decimals: Number(p.dataset.decimals),
      amount: BigInt(p.dataset.amountUnits),
      router: p.dataset.router,
      intent: signed.intent,
      signature: signed.signature
    };
  }

  function errorText(error, o) {
    if (error instanceof WalletError) return t(error.key, error.values);
    var code = error && (error.code !== undefined ? error.code : error.data && error.data.code);
    if (code === 4001) return t("error_rejected");
    if (code === 4902) return t("error_unknown_chain", { chain: o.chain });
    if (code === -32002) return t("error_pending");
    return t("error_generic", { message: (error && error.message) || String(error) });
  }

  function sleep(ms) {
    return new Promise(function (resolve) { window.setTimeout(resolve, ms); });
  }

  function Wallet(eth, account) {
    this.eth = eth;
    this.account = account;
  }
  Wallet.prototype.call = function (to, data) {
    return this.eth.request({ method: "eth_call", params: [{ to: to, data: data }, "latest"] });
  };
  Wallet.prototype.send = function (to, data) {
    return this.eth.request({ method: "eth_sendTransaction", params: [{ from: this.account, to: to, data: data }] });
  };
  Wallet.prototype.mined = async function (hash) {
    for (var i = 0; i < RECEIPT_MAX_POLLS; i++) {
      var receipt = await this.eth.request({ method: "eth_getTransactionReceipt", params: [hash] });
      if (receipt) {
        if (Number(receipt.status) !== 1) throw new WalletError("error_failed");
        return receipt;
      }
      await sleep(RECEIPT_POLL_MS);
    }
    return null;
  };

  async function switchChain(eth, o) {
    var wanted = "0x" + o.chainId.toString(16);
    if (Number(await eth.request({ method: "eth_chainId" })) === o.chainId) return;
    try {
      await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: wanted }] });
    } catch (error) {
      if (error && error.code === 4902) throw new WalletError("error_unknown_chain", { chain: o.chain });
      if (error && error.code === 4001) throw new WalletError("error_wrong_chain", { chain: o.chain });
      throw error;
    }
    if (Number(await eth.request({ method: "eth_chainId" })) !== o.chainId) {
      throw new WalletError("error_wrong_chain", { chain: o.chain });
    }
  }

  async function checkBalance(wallet, o) {
    var balance = BigInt(await wallet.call(o.token, SEL.balanceOf + word(wallet.account)));
    if (balance < o.amount) {
      throw new WalletError("error_insufficient", {
        asset: o.asset,
        balance: formatUnits(balance, o.decimals),
        amount: formatUnits(o.amount, o.decimals),
        shortfall: formatUnits(o.amount - balance, o.decimals)
      });
    }
  }

  // EIP-2612: one signature instead of an approve transaction, for tokens that expose the
  // standard typehash. Tried first on the node (eth_estimateGas): a token whose permit
  // does not work (DAI-style) falls back to approve, and no transaction fails on chain.
  async function permitCalldata(wallet, o, step) {
    var typehash;
    try { typehash = await wallet.call(o.token, SEL.permitTypehash); } catch (e) { return null; }
    if (!typehash || strip(typehash) !== strip(EIP2612_TYPEHASH)) return null;
    var name = decodeString(await wallet.call(o.token, SEL.name));
    var version = "1";
    try { version = decodeString(await wallet.call(o.token, SEL.version)); } catch (e) { version = "1"; }
    var nonce = BigInt(await wallet.call(o.token, SEL.nonces + word(wallet.account)));
    var deadline = String(o.intent.deadline);
    step("step_permit");
    var typed = {
      types: {
        EIP712Domain: [
          { name: "name", type: "string" }, { name: "version", type: "string" },
          { name: "chainId", type: "uint256" }, { name: "verifyingContract", type: "address" }
        ],
        Permit: [
          { name: "owner", type: "address" }, { name: "spender", type: "address" },
          { name: "value", type: "uint256" }, { name: "nonce", type: "uint256" },
          { name: "deadline", type: "uint256" }
        ]
      },
      primaryType: "Permit",
      domain: { name: name, version: version, chainId: o.chainId, verifyingContract: o.token },
      message: {
        owner: wallet.account, spender: o.router, value: o.amount.toString(), nonce: nonce.toString(),
        deadline: deadline
      }
    };
    var signature = await wallet.eth.request({
      method: "eth_signTypedData_v4", params: [wallet.account, JSON.stringify(typed)]
    });
    var data = encodePayWithPermit(o, deadline, signature);
    try {
      await wallet.eth.request({ method: "eth_estimateGas", params: [{ from: wallet.account, to: o.router, data: data }] });
    } catch (e) {
      return null;
    }
    return data;
  }

  async function payWithWallet(p, step) {
    var o = optionData(p);
    var eth = window.ethereum;
    if (Number(o.intent.deadline) < nowS()) throw new WalletError("error_expired");
    step("step_connect");
    var accounts = await eth.request({ method: "eth_requestAccounts" });
    var wallet = new Wallet(eth, accounts[0]);
    step("step_switch", { chain: o.chain });
    await switchChain(eth, o);
    step("step_balance", { asset: o.asset });
    await checkBalance(wallet, o);
    var allowance = BigInt(await wallet.call(o.token, SEL.allowance + word(wallet.account) + word(o.router)));
    var data = allowance >= o.amount ? null : await permitCalldata(wallet, o, step);
    if (data === null) {
      data = encodePay(o);
      if (allowance < o.amount) {
        step("step_approve", { asset: o.asset });
        var approval = await wallet.send(o.token, SEL.approve + word(o.router) + uint(o.amount));
        step("step_approve_wait");
        await wallet.mined(approval);
      }
    }
    step("step_pay");
    var hash = await wallet.send(o.router, data);
    step("step_pay_wait");
    pollSoon();
    await wallet.mined(hash);
    pollSoon();
  }

  function startWallet(button) {
    var p = button.closest("section.option");
    var progress = p.querySelector(".wallet-progress");
    var error = p.querySelector(".wallet-error");
    if (!window.ethereum) {
      error.textContent = t("no_wallet");
      error.hidden = false;
      return;
    }
    function step(key, values) { progress.textContent = t(key, values); }
    button.disabled = true;
    error.hidden = true;
    payWithWallet(p, step).catch(function (failure) {
      progress.textContent = "";
      error.textContent = errorText(failure, { chain: p.dataset.chain });
      error.hidden = false;
      button.textContent = t("retry");
      button.disabled = Number(p.dataset.quoteExpiresAt) <= nowS();
    });
  }

  // --- wiring --------------------------------------------------------------------------

  root.addEventListener("change", function (event) {
    if (event.target.name === "option") showSelected();
  });
  root.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("copy")) copy(button);
    if (button.classList.contains("pay-wallet")) startWallet(button);
  });

  tick();
  window.setInterval(tick, 1000);
  render(current);
  schedule(MIN_DELAY_MS);
})();
