// AudioWorklet processor: the microphone's samples (channels averaged) as 16-bit PCM frames of
// `frameSamples` at the AudioContext's own rate, posted to the page with the frame's RMS and peak.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.frameSamples = options.processorOptions.frameSamples;
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    for (let i = 0; i < n; i++) {
      let x = 0;
      for (let c = 0; c < channels.length; c++) x += channels[c][i];
      x /= channels.length;
      this.sumSquares += x * x;
      const a = Math.abs(x);
      if (a > this.peak) this.peak = a;
      const s = Math.max(-1, Math.min(1, x));
      this.frame[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
      if (this.filled === this.frameSamples) {
        const rms = Math.sqrt(this.sumSquares / this.frameSamples);
        this.port.postMessage({ pcm: this.frame.buffer, rms, peak: this.peak }, [this.frame.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.filled = 0;
        this.sumSquares = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("emostream-capture", CaptureProcessor);
