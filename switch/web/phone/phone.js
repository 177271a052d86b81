/*
 * dialswitch browser phone: JsSIP over the switch's SIP WebSocket listener (RFC 7118).
 *
 * The phone registers as sip:IDENTITY@DOMAIN (digest username IDENTITY, the realm is
 * the switch's domain) and calls sip:+15005550100@DOMAIN for a number and
 * sip:bob@DOMAIN for client:bob. /phone/config.json gives the domain and the WebSocket
 * URLs to try, best first; the Server field overrides them.
 *
 * Tests read the page through stable ids and data attributes: #status[data-state],
 * #call-state[data-state], #message[data-kind][data-reason], #level[data-level]
 * [data-peak-hz], #app[data-ready]. `?debug=1` turns on JsSIP's console log.
 */
(function () {
  'use strict';

  const CONFIG_URL = '/phone/config.json';
  const IDENTITY = /^[A-Za-z0-9_]{1,64}$/;
  const METER_INTERVAL_MS = 100;
  const METER_FLOOR_DB = -60;

  const ui = {};
  const phone = {
    config: { domain: location.hostname, websocket_urls: [], ice_servers: [] },
    ua: null,
    identity: '',
    registration: 'logged-out',
    session: null,
    direction: null,
    callState: 'idle',
    peer: '',
    target: '',
    muted: false,
    audio: null,
    meter: null,
  };

  // --- pure helpers -----------------------------------------------------------------

  /** The host part of a SIP URI for `domain` (IPv6 bracketed). */
  function uriHost(domain) {
    return domain.includes(':') && !domain.startsWith('[') ? `[${domain}]` : domain;
  }

  /**
   * The SIP URI to call for what was typed: +15005550100 (spaces, dashes, dots and
   * brackets dropped) is sip:+15005550100@DOMAIN; client:bob, or a bare identity, is
   * sip:bob@DOMAIN; a sip: or sips: URI is used as is. Throws an Error saying why.
   */
  function targetUri(text, domain) {
    const value = String(text).trim();
    if (!value) {
      throw new Error('Enter a number or client:name to call.');
    }
    if (/^sips?:/i.test(value)) {
      return value;
    }
    const host = uriHost(domain);
    const client = /^client:(.*)$/i.exec(value);
    if (client) {
      const identity = client[1].trim();
      if (!IDENTITY.test(identity)) {
        throw new Error(`Not a client name: "${identity}" (letters, digits and _ only).`);
      }
      return `sip:${identity}@${host}`;
    }
    const number = value.replace(/[\s().-]/g, '');
    if (/^\+?[0-9*#]+$/.test(number)) {
      return `sip:${number.replace(/#/g, '%23')}@${host}`;
    }
    if (IDENTITY.test(value)) {
      return `sip:${value}@${host}`;
    }
    throw new Error(`Not a number or client:name: "${value}".`);
  }

  /** The WebSocket URLs to try: the override, else the switch's; never ws: from https. */
  function socketUrls(config, override, pageProtocol) {
    const urls = override ? [override] : config.websocket_urls.slice();
    return pageProtocol === 'https:' ? urls.filter((url) => /^wss:/i.test(url)) : urls;
  }

  /** Whether a CANCEL says another phone took the call (RFC 3326: cause=200). */
  function answeredElsewhere(request) {
    if (!request || typeof request.getHeaders !== 'function') {
      return false;
    }
    return request.getHeaders('reason').some(
      (value) => /^\s*SIP\s*;(.*;)?\s*cause\s*=\s*200\b/i.test(value) ||
        /completed elsewhere/i.test(value));
  }

  function statusLine(response) {
    return response && response.status_code
      ? `${response.status_code} ${response.reason_phrase || ''}`.trim()
      : '';
  }

  /** {kind, reason, text} for a registrationFailed event. */
  function describeRegistrationFailure(event) {
    const causes = JsSIP.C.causes;
    const line = statusLine(event.response);
    const code = event.response ? event.response.status_code : 0;
    if (event.cause === causes.AUTHENTICATION_ERROR || code === 403) {
      return {
        kind: 'error',
        reason: 'auth',
        text: `Wrong identity or password${line ? ` (${line})` : ''}.`,
      };
    }
    if (event.cause === causes.CONNECTION_ERROR || event.cause === causes.REQUEST_TIMEOUT) {
      return {
        kind: 'error',
        reason: 'connection',
        text: `Registration failed: no answer from the switch (${event.cause}).`,
      };
    }
    return {
      kind: 'error',
      reason: 'registration',
      text: `Registration failed: ${line || event.cause}.`,
    };
  }

  /** {kind, reason, text} for a session's 'failed' event (the call never connected). */
  function describeCallFailure(event, direction, peer) {
    const causes = JsSIP.C.causes;
    const line = statusLine(event.message);
    if (direction === 'incoming' && event.originator === 'remote' &&
        event.cause === causes.CANCELED) {
      if (answeredElsewhere(event.message)) {
        return { kind: 'info', reason: 'answered-elsewhere', text: 'Answered elsewhere.' };
      }
      return { kind: 'info', reason: 'missed', text: `Missed call from ${peer}.` };
    }
    if (event.originator === 'local' && event.cause === causes.CANCELED) {
      return { kind: 'info', reason: 'cancelled', text: 'Call cancelled.' };
    }
    if (event.originator === 'local' && event.cause === causes.REJECTED) {
      return { kind: 'info', reason: 'declined', text: `Declined the call from ${peer}.` };
    }
    if (event.cause === causes.NO_ANSWER && direction === 'incoming') {
      return { kind: 'info', reason: 'missed', text: `Missed call from ${peer}.` };
    }
    if (event.cause === causes.USER_DENIED_MEDIA_ACCESS) {
      return {
        kind: 'error',
        reason: 'media',
        text: 'No microphone: allow this page to use the microphone, then try again.',
      };
    }
    if (event.cause === causes.CONNECTION_ERROR) {
      return {
        kind: 'error',
        reason: 'connection',
        text: 'Call failed: the connection to the switch was lost.',
      };
    }
    if (event.originator === 'remote' && line) {
      return { kind: 'error', reason: 'call-failed', text: `Call failed: ${line}.` };
    }
    return { kind: 'error', reason: 'call-failed', text: `Call failed: ${event.cause}.` };
  }

  /** {kind, reason, text} for a session's 'ended' event (an answered call ended). */
  function describeCallEnd(event) {
    const causes = JsSIP.C.causes;
    if (event.cause === causes.RTP_TIMEOUT) {
      return { kind: 'error', reason: 'media', text: 'Call ended: no audio was received.' };
    }
    if (event.cause === causes.CONNECTION_ERROR || event.cause === causes.REQUEST_TIMEOUT ||
        event.cause === causes.DIALOG_ERROR) {
      return {
        kind: 'error',
        reason: 'connection',
        text: `Call ended: the switch could not be reached (${event.cause}).`,
      };
    }
    if (event.originator === 'remote') {
      return { kind: 'info', reason: 'ended', text: 'Call ended by the other party.' };
    }
    return { kind: 'info', reason: 'ended', text: 'Call ended.' };
  }

  /** Who a call is with, from its remote identity (a JsSIP NameAddrHeader). */
  function describeParty(identity) {
    if (!identity) {
      return 'unknown';
    }
    const user = identity.uri && identity.uri.user ? identity.uri.user : String(identity.uri);
    return identity.display_name && identity.display_name !== user
      ? `${identity.display_name} (${user})`
      : user;
  }

  // --- the page ---------------------------------------------------------------------

  function showMessage(text, kind, reason) {
    ui.message.textContent = text;
    ui.message.dataset.kind = kind;
    ui.message.dataset.reason = reason;
    ui.message.hidden = false;
  }

  function clearMessage(...reasons) {
    if (reasons.length && !reasons.includes(ui.message.dataset.reason)) {
      return;
    }
    ui.message.textContent = '';
    ui.message.dataset.kind = '';
    ui.message.dataset.reason = '';
    ui.message.hidden = true;
  }

  function setRegistration(state, text) {
    phone.registration = state;
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    render();
  }

  function setCall(state, text) {
    phone.callState = state;
    ui.callState.dataset.state = state;
    ui.callState.textContent = text;
    render();
  }

  /** Enables and shows the controls that make sense in the current state. */
  function render() {
    const loggedIn = phone.ua !== null;
    const inCall = phone.callState === 'in-call';
    const idle = phone.session === null;
    ui.loginForm.hidden = loggedIn;
    ui.phone.hidden = !loggedIn;
    ui.call.disabled = !(idle && phone.registration === 'registered');
    ui.dial.disabled = !idle;
    ui.hangup.disabled = idle;
    ui.mute.disabled = !inCall;
    ui.mute.setAttribute('aria-pressed', String(phone.muted));
    ui.mute.textContent = phone.muted ? 'Unmute' : 'Mute';
    ui.incoming.hidden = phone.callState !== 'incoming';
    for (const key of ui.keys) {
      key.disabled = !(idle || inCall);
    }
  }

  function audioContext() {
    if (!phone.audio && window.AudioContext) {
      phone.audio = new AudioContext();
    }
    if (phone.audio && phone.audio.state === 'suspended') {
      phone.audio.resume().catch(() => {});
    }
    return phone.audio;
  }

  /** Measures the remote audio with an AnalyserNode: #level shows it. */
  function startMeter(stream) {
    stopMeter();
    const context = audioContext();
    if (!context || !stream.getAudioTracks().length) {
      return;
    }
    const source = context.createMediaStreamSource(stream);
    const analyser = context.createAnalyser();
    analyser.fftSize = 2048;
    analyser.smoothingTimeConstant = 0.2;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const spectrum = new Float32Array(analyser.frequencyBinCount);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const sample of samples) {
        sum += sample * sample;
      }
      const rms = Math.sqrt(sum / samples.length);
      analyser.getFloatFrequencyData(spectrum);
      let peak = 1;
      for (let bin = 2; bin < spectrum.length; bin += 1) {
        if (spectrum[bin] > spectrum[peak]) {
          peak = bin;
        }
      }
      const db = rms > 0 ? 20 * Math.log10(rms) : METER_FLOOR_DB;
      ui.level.value = Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
      ui.level.dataset.level = rms.toFixed(4);
      ui.level.dataset.peakHz = rms > 0.001
        ? String(Math.round((peak * context.sampleRate) / analyser.fftSize))
        : '0';
      ui.level.title = `${Math.round(db)} dBFS`;
    }, METER_INTERVAL_MS);
    phone.meter = { source, timer };
  }

  function stopMeter() {
    if (phone.meter) {
      clearInterval(phone.meter.timer);
      phone.meter.source.disconnect();
      phone.meter = null;
    }
    ui.level.value = 0;
    ui.level.dataset.level = '0';
    ui.level.dataset.peakHz = '0';
  }

  function playRemote(stream) {
    ui.remoteAudio.srcObject = stream;
    ui.remoteAudio.play().catch(() => {});
    startMeter(stream);
  }

  /** Plays the remote audio of a session once its peer connection has a track. */
  function watchRemoteAudio(session) {
    const hook = (connection) => connection.addEventListener('track', (event) => {
      playRemote(event.streams[0] || new MediaStream([event.track]));
    });
    if (session.connection) {
      hook(session.connection);
    } else {
      session.on('peerconnection', (event) => hook(event.peerconnection));
    }
  }

  /**
   * Options of ua.call() and session.answer(), new each time (JsSIP changes them).
   * offerToReceiveAudio: the switch's INVITEs to browsers carry no offer (RFC 3261
   * section 13.2.1), and without it JsSIP would answer such a call with no audio.
   */
  function callOptions() {
    return {
      mediaConstraints: { audio: true, video: false },
      rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false },
      pcConfig: { iceServers: phone.config.ice_servers || [] },
    };
  }

  /** The call is over: `state` is 'ended' (it was answered) or 'failed'. */
  function finishCall(session, state, outcome) {
    if (phone.session !== session) {
      return;
    }
    phone.session = null;
    phone.direction = null;
    phone.muted = false;
    stopMeter();
    ui.remoteAudio.srcObject = null;
    showMessage(outcome.text, outcome.kind, outcome.reason);
    setCall(state, outcome.text);
  }

  function onNewSession(event) {
    const session = event.session;
    if (event.originator === 'remote') {
      if (phone.session) {
        session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
        return;
      }
      phone.direction = 'incoming';
      phone.peer = describeParty(session.remote_identity);
      ui.caller.textContent = phone.peer;
    } else {
      phone.direction = 'outgoing';
      phone.peer = phone.target;
    }
    phone.session = session;
    const direction = phone.direction;
    const peer = phone.peer;
    watchRemoteAudio(session);
    session.on('progress', () => {
      if (direction === 'outgoing') {
        setCall('ringing', `Ringing ${peer}…`);
      }
    });
    session.on('accepted', () => setCall('in-call', `In call with ${peer}`));
    session.on('confirmed', () => setCall('in-call', `In call with ${peer}`));
    session.on('ended', (ended) => finishCall(session, 'ended', describeCallEnd(ended)));
    session.on('failed', (failed) => {
      finishCall(session, 'failed', describeCallFailure(failed, direction, peer));
    });
    clearMessage();
    if (direction === 'incoming') {
      setCall('incoming', `Incoming call from ${peer}`);
    } else {
      setCall('calling', `Calling ${peer}…`);
    }
  }

  function startUa(identity, password, urls) {
    const domain = phone.config.domain;
    const sockets = urls.map((url, index) => ({
      socket: new JsSIP.WebSocketInterface(url),
      weight: urls.length - index,
    }));
    const ua = new JsSIP.UA({
      sockets,
      uri: `sip:${identity}@${uriHost(domain)}`,
      authorization_user: identity,
      password,
      register: true,
      user_agent: `dialswitch-phone JsSIP/${JsSIP.version}`,
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 30,
    });
    // Events of a UA already stopped (logged out, wrong password) change nothing.
    const on = (name, handler) => ua.on(name, (event) => {
      if (phone.ua === ua) {
        handler(event);
      }
    });
    on('connecting', (event) => {
      setRegistration('connecting', `Connecting to ${event.socket.url}…`);
    });
    on('connected', (event) => {
      clearMessage('connection');
      setRegistration('connected', `Connected to ${event.socket.url}, registering…`);
    });
    on('disconnected', (event) => {
      const url = event.socket ? event.socket.url : urls[0];
      const code = event.code ? ` (WebSocket close code ${event.code})` : '';
      const hint = /^wss:/i.test(url)
        ? ' For wss:, this browser must trust the switch\'s certificate.'
        : '';
      showMessage(
        `Cannot reach the switch at ${url}: the WebSocket connection was refused or lost` +
          `${code}. Retrying…${hint}`,
        'error',
        'connection');
      setRegistration('disconnected', 'Disconnected');
    });
    on('registered', () => {
      clearMessage('connection', 'registration');
      setRegistration('registered', `Registered as ${identity}@${domain}`);
    });
    on('unregistered', () => {
      // After 'disconnected' (the socket closed), that is the news to keep showing.
      if (phone.registration !== 'disconnected') {
        setRegistration('unregistered', 'Not registered');
      }
    });
    on('registrationFailed', (event) => {
      const failure = describeRegistrationFailure(event);
      showMessage(failure.text, failure.kind, failure.reason);
      if (failure.reason === 'auth') {
        // Retrying a wrong password only earns a block (the switch's [registrar] limits).
        stopUa();
        setRegistration('failed', 'Not logged in: wrong identity or password');
        ui.password.value = '';
        ui.password.focus();
      } else {
        setRegistration('failed', 'Registration failed');
      }
    });
    on('newRTCSession', onNewSession);
    phone.ua = ua;
    phone.identity = identity;
    ui.who.textContent = `as ${identity}`;
    ua.start();
  }

  function stopUa() {
    const ua = phone.ua;
    phone.ua = null;
    if (ua) {
      ua.stop();
    }
    render();
  }

  function login(event) {
    event.preventDefault();
    clearMessage();
    const identity = ui.identity.value.trim();
    const password = ui.password.value;
    const override = ui.server.value.trim();
    if (!IDENTITY.test(identity)) {
      showMessage('The identity is 1 to 64 letters, digits and _ (e.g. alice).', 'error', 'input');
      return;
    }
    if (override && !/^wss?:\/\/[^\s/]+/i.test(override)) {
      showMessage(
        'The server is a ws:// or wss:// URL, e.g. wss://sip.example.com:5067.', 'error', 'input');
      return;
    }
    if (typeof JsSIP === 'undefined') {
      showMessage(
        'The SIP library did not load: run `make install` on the switch.', 'error', 'config');
      return;
    }
    const urls = socketUrls(phone.config, override, location.protocol);
    if (!urls.length) {
      showMessage(
        'The switch has no WebSocket listener this page can use: add ' +
          '"ws:HOST:PORT" (or "wss:" for an https page) to [sip] listen, or enter a server.',
        'error',
        'config');
      return;
    }
    if (!navigator.mediaDevices) {
      showMessage(
        'No microphone access on this page: open it over https (or on localhost) to make calls.',
        'error',
        'insecure');
    }
    try {
      localStorage.setItem('dialswitch-phone', JSON.stringify({ identity, server: override }));
    } catch (error) {
      // Storage may be disabled: the form is simply not remembered.
    }
    audioContext(); // created in the click, so the browser lets it play
    try {
      startUa(identity, password, urls);
    } catch (error) {
      phone.ua = null;
      showMessage(`Cannot start the phone: ${error.message}`, 'error', 'config');
      render();
    }
  }

  function logout() {
    if (phone.session) {
      phone.session.terminate();
    }
    stopUa();
    setRegistration('logged-out', 'Not logged in');
  }

  function dial(event) {
    event.preventDefault();
    if (!phone.ua || phone.session) {
      return;
    }
    let uri;
    try {
      uri = targetUri(ui.dial.value, phone.config.domain);
    } catch (error) {
      showMessage(error.message, 'error', 'input');
      return;
    }
    phone.target = ui.dial.value.trim();
    audioContext();
    try {
      phone.ua.call(uri, callOptions());
    } catch (error) {
      showMessage(`Cannot call ${phone.target}: ${error.message}`, 'error', 'input');
    }
  }

  function answer() {
    if (phone.session && phone.callState === 'incoming') {
      audioContext();
      setCall('answering', `Answering ${phone.peer}…`);
      phone.session.answer(callOptions());
    }
  }

  function decline() {
    if (phone.session && phone.callState === 'incoming') {
      phone.session.terminate({ status_code: 603, reason_phrase: 'Decline' });
    }
  }

  function hangup() {
    if (phone.session) {
      phone.session.terminate();
    }
  }

  function toggleMute() {
    if (!phone.session || phone.callState !== 'in-call') {
      return;
    }
    if (phone.muted) {
      phone.session.unmute({ audio: true });
    } else {
      phone.session.mute({ audio: true });
    }
    phone.muted = !phone.muted;
    render();
  }

  /** In a call: DTMF as RFC 4733 telephone-events in the RTP stream; else types. */
  function press(digit) {
    if (phone.session && phone.callState === 'in-call') {
      try {
        phone.session.sendDTMF(digit, {
          transportType: JsSIP.C.DTMF_TRANSPORT.RFC2833,
          duration: 160,
          interToneGap: 80,
        });
        ui.dtmfSent.textContent += digit;
      } catch (error) {
        showMessage(`Could not send ${digit}: ${error.message}`, 'error', 'dtmf');
      }
    } else if (!phone.session) {
      ui.dial.value += digit;
      ui.dial.focus();
    }
  }

  async function loadConfig() {
    try {
      const response = await fetch(CONFIG_URL, { cache: 'no-store' });
      if (!response.ok) {
        throw new Error(`${response.status} ${response.statusText}`);
      }
      phone.config = await response.json();
    } catch (error) {
      showMessage(
        `Could not load ${CONFIG_URL} (${error.message}): enter a server.`, 'error', 'config');
    }
  }

  function restoreForm() {
    try {
      const saved = JSON.parse(localStorage.getItem('dialswitch-phone') || '{}');
      ui.identity.value = saved.identity || '';
      ui.server.value = saved.server || '';
      ui.serverDetails.open = Boolean(saved.server);
    } catch (error) {
      // Nothing saved, or storage disabled.
    }
  }

  async function init() {
    for (const id of [
      'app', 'status', 'message', 'identity', 'password', 'server', 'login', 'phone', 'who',
      'logout', 'dial', 'call', 'incoming', 'caller', 'answer', 'decline', 'hangup', 'mute',
      'level', 'keypad',
    ]) {
      ui[id] = document.getElementById(id);
    }
    ui.loginForm = document.getElementById('login-form');
    ui.dialForm = document.getElementById('dial-form');
    ui.serverDetails = document.getElementById('server-details');
    ui.callState = document.getElementById('call-state');
    ui.dtmfSent = document.getElementById('dtmf-sent');
    ui.remoteAudio = document.getElementById('remote-audio');
    ui.keys = Array.from(ui.keypad.querySelectorAll('button[data-digit]'));

    if (new URLSearchParams(location.search).get('debug') === '1' && window.JsSIP) {
      JsSIP.debug.enable('JsSIP:*');
    }
    ui.loginForm.addEventListener('submit', login);
    ui.logout.addEventListener('click', logout);
    ui.dialForm.addEventListener('submit', dial);
    ui.answer.addEventListener('click', answer);
    ui.decline.addEventListener('click', decline);
    ui.hangup.addEventListener('click', hangup);
    ui.mute.addEventListener('click', toggleMute);
    for (const key of ui.keys) {
      key.addEventListener('click', () => press(key.dataset.digit));
    }
    window.addEventListener('pagehide', () => stopUa());
    restoreForm();
    render();
    await loadConfig();
    ui.app.dataset.ready = 'true';
  }

  window.dialswitchPhone = {
    targetUri,
    socketUrls,
    answeredElsewhere,
    /** The live JsSIP RTCSession, or null (tests read its peer connection's stats). */
    get session() {
      return phone.session;
    },
    get state() {
      return {
        registration: phone.registration,
        call: phone.callState,
        direction: phone.direction,
        muted: phone.muted,
        config: phone.config,
      };
    },
  };

  init();
}());
