// Live phases: each element with data-job follows its job with UWS WAIT (the server
// answers when the phase changes: a long poll, not a polling loop). On a job page each
// change fetches the page again and shows its new main part (progress, results, error,
// lineage) without reloading the page; a running job's elapsed time and progress bar
// count up from its start time on the browser's clock (no request).
"use strict";
const FINAL = ["COMPLETED", "ERROR", "ABORTED", "ARCHIVED"];

async function follow(element) {
  let phase = element.dataset.phase;
  while (!FINAL.includes(phase)) {
    const url = `${element.dataset.job}?WAIT=60&PHASE=${encodeURIComponent(phase)}`;
    let answer;
    try {
      answer = await fetch(url, { credentials: "same-origin" });
    } catch (error) {
      await new Promise((done) => setTimeout(done, 5000));
      continue;
    }
    if (!answer.ok) return;
    const doc = new DOMParser().parseFromString(await answer.text(), "application/xml");
    const found = doc.getElementsByTagNameNS("http://www.ivoa.net/xml/UWS/v1.0", "phase")[0];
    if (!found) return;
    const changed = found.textContent !== phase;
    phase = found.textContent;
    element.textContent = phase;
    element.className = `phase phase-${phase.toLowerCase()}`;
    if (changed && element.dataset.reload) {
      await refresh(); // the new main part follows the job from here
      return;
    }
  }
}

async function refresh() {
  const answer = await fetch(window.location.href, { credentials: "same-origin" });
  if (!answer.ok) return;
  const page = new DOMParser().parseFromString(await answer.text(), "text/html");
  const fresh = page.getElementById("main");
  const main = document.getElementById("main");
  if (!fresh) return;
  main.replaceChildren(...fresh.childNodes);
  start(main);
}

function tick(root) {
  const clocks = root.querySelectorAll("[data-start]");
  if (!clocks.length) return;
  const update = () => {
    clocks.forEach((clock) => {
      if (!clock.isConnected) return;
      const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(clock.dataset.start)) / 1000));
      if (clock.tagName === "PROGRESS") clock.value = Math.min(seconds, clock.max);
      else clock.textContent = String(seconds);
    });
  };
  const timer = setInterval(() => {
    if (![...clocks].some((clock) => clock.isConnected)) clearInterval(timer);
    else update();
  }, 1000);
}

function start(root) {
  root.querySelectorAll("[data-job]").forEach((element) => follow(element));
  tick(root);
}

start(document);
