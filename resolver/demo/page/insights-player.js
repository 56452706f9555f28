// A stand-in for Flex Insights' player (@twilio/flex-insights-player 2.3.3), following the rules of its built
// code (dist/wfo-player.js: getRecordingUrl, fetchPresignedUrl, extractExpirationParam,
// constructAuthorizationHeader, refreshPresignedUrl, handleAudioRefreshedUrl and its "error" handler).
// The real package cannot run outside Flex: it is a CommonJS bundle that needs React, a Flex Insights identity
// client and the recording's metadata from Insights' own API. Only the URL handling is reproduced here:
//   - the entry's `url` is the recording URL, its `url_provider` the secure one;
//   - with a secure URL and a Flex token: GET url_provider with
//     `Authorization: Basic base64("token:" + token)`; answer `{"media_url"}` is played; a non-2xx answer
//     falls back to the current recording URL (at first: the entry's `url`);
//   - a refresh is set at 0.9 of the played URL's `X-Amz-Expires` (seconds); none when it is missing or 0;
//     the refresh fetches again (setting the next one), pauses, swaps the audio's src, and on
//     `loadedmetadata` seeks back to where the user was and plays on if it was playing;
//   - a trailing ".mp3" is cut off (the player asks for WAV);
//   - a playback error with MEDIA_ERR_SRC_NOT_SUPPORTED (code 4) shows "Unauthorized access. Please login to
//     Flex." and unloads the recording. 2.3.3 does not refresh after a playback error.
const REFRESH_AT = 0.9;
const UNAUTHORIZED = "Unauthorized access. Please login to Flex.";

export class InsightsPlayer {
  /** @param {{audio: HTMLAudioElement, title: HTMLElement, error: HTMLElement, token: () => string}} parts */
  constructor({ audio, title, error, token }) {
    Object.assign(this, { audio, titleEl: title, errorEl: error, token });
    this.refreshTimeout = null;
    this.isPlaying = false;
    this.playedTime = 0;
    this.refreshes = 0; // for the demo's tests: how many times the URL was refreshed
    audio.addEventListener("play", () => { this.isPlaying = true; });
    audio.addEventListener("pause", () => { this.isPlaying = false; });
    audio.addEventListener("error", () => this.onError());
    audio.addEventListener("loadedmetadata", () => {
      if (this.playedTime > 0) {
        this.audio.currentTime = this.playedTime;
        if (this.resume) this.audio.play().catch(() => {});
      }
    });
  }

  async load(entry) {
    this.clearRefresh();
    Object.assign(this, { error: null, playedTime: 0, resume: false });
    this.errorEl.hidden = true;
    this.errorEl.textContent = "";
    this.titleEl.textContent = entry.title || "Recording";
    this.recordingUrl = entry.url;
    this.secureRecordingUrl = entry.url_provider || null;
    this.recordingUrl = await this.getRecordingUrl();
    if (!this.recordingUrl) return;
    this.audio.src = this.recordingUrl;
    this.audio.play().catch(() => {}); // the real player plays once the recording is ready
  }

  async getRecordingUrl() {
    let url = this.recordingUrl;
    const jwe = this.token();
    if (this.secureRecordingUrl && jwe) {
      url = await this.fetchPresignedUrl(this.secureRecordingUrl, jwe);
      const ms = expiresParam(url) * REFRESH_AT * 1000;
      if (!this.error && ms > 0) {
        this.refreshTimeout = setTimeout(() => this.refreshPresignedUrl(), ms);
      } else {
        this.clearRefresh();
      }
    }
    if (url && url.lastIndexOf(".mp3") > 0) url = url.substring(0, url.lastIndexOf(".mp3"));
    return url;
  }

  async fetchPresignedUrl(secureUrl, jwe) {
    const resp = await fetch(secureUrl, { headers: { Authorization: `Basic ${btoa(`token:${jwe}`)}` } });
    if (!resp.ok) {
      console.log(`Error fetching recording URL: ${resp.status} ${resp.statusText}`);
      return this.recordingUrl;
    }
    return (await resp.json()).media_url;
  }

  async refreshPresignedUrl() {
    this.recordingUrl = await this.getRecordingUrl();
    this.refreshes += 1;
    this.playedTime = this.audio.currentTime;
    this.resume = this.isPlaying;
    this.audio.pause();
    this.audio.src = this.recordingUrl;
  }

  onError() {
    const err = this.audio.error;
    if (!err || err.code !== 4) return;
    this.error = UNAUTHORIZED;
    this.clearRefresh();
    this.errorEl.textContent = UNAUTHORIZED;
    this.errorEl.hidden = false;
    this.audio.removeAttribute("src");
  }

  clearRefresh() {
    clearTimeout(this.refreshTimeout);
    this.refreshTimeout = null;
  }
}

function expiresParam(url) {
  return Number(new URL(url).searchParams.get("X-Amz-Expires"));
}
