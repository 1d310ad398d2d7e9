// The report form's schedule picker in words ("Runs: weekdays at 07:00"). Picking writes the
// cron fields; typing in the cron fields shows the kind they match (or Custom). Either way the
// "schedule" and "next five runs" shown on the page are asked of the server again, without a
// reload. A convenience only: the form derives the cron fields from the picker itself on save.
(function () {
  "use strict";
  const CRON = ["minute", "hour", "day_of_month", "month_of_year", "day_of_week"];
  const LAST_BUSINESS_DAY = "monthly_last_business_day";
  const WEEKDAY_NAMES = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };
  const BOUNDS = {
    minute: [0, 59], hour: [0, 23], day_of_month: [1, 31], month_of_year: [1, 12], day_of_week: [0, 6],
  };

  // The days fields (day of month, month, day of week) of each kind, as the server writes them.
  function daysOf(kind, weekday, day) {
    return {
      daily: ["*", "*", "*"],
      weekdays: ["*", "*", "mon-fri"],
      weekly: ["*", "*", weekday],
      monthly_day: [day, "*", "*"],
      monthly_first_weekday: ["1-7", "*", weekday],
      monthly_last_business_day: ["26-31", "*", "mon-fri"],
      quarterly: [day, "1,4,7,10", "*"],
    }[kind];
  }

  // A cron field as the set of values it matches (as Celery reads it), or null when it cannot be read here.
  function expand(field, text) {
    const [low, high] = BOUNDS[field];
    const number = (word) => {
      const value = field === "day_of_week" && word in WEEKDAY_NAMES ? WEEKDAY_NAMES[word] : Number(word);
      return word !== "" && Number.isInteger(value) && value >= low && value <= high ? value : null;
    };
    const values = new Set();
    for (const part of text.trim().toLowerCase().split(",")) {
      const [range, stepText] = part.split("/");
      const step = stepText === undefined ? 1 : Number(stepText);
      if (!Number.isInteger(step) || step < 1) return null;
      let [first, last] = range === "*" ? [low, high] : range.split("-").map(number);
      if (range !== "*" && range.split("-").length === 1) last = stepText === undefined ? first : high;
      if (first === null || last === null || first === undefined || last === undefined || first > last) return null;
      for (let value = first; value <= last; value += step) values.add(value);
    }
    return values;
  }

  const sameSet = (set, values) => set.size === values.length && values.every((value) => set.has(value));
  const range = (first, last) => Array.from({ length: last - first + 1 }, (_, index) => first + index);
  const only = (set) => (set.size === 1 ? String([...set][0]) : null);

  // The kind the cron fields match: [kind, weekday, day], or ["custom"]. The last business day
  // is a rule the cron cannot say: its fields match it only while it is the kind already picked.
  function kindOf(cron, current) {
    const sets = {};
    for (const field of CRON) {
      sets[field] = expand(field, cron[field]);
      if (sets[field] === null) return ["custom"];
    }
    if (sets.minute.size !== 1 || sets.hour.size !== 1) return ["custom"];
    const days = sets.day_of_month, months = sets.month_of_year, weekdays = sets.day_of_week;
    const everyMonth = sameSet(months, range(1, 12)), everyWeekday = sameSet(weekdays, range(0, 6));
    if (current === LAST_BUSINESS_DAY && everyMonth && sameSet(days, range(26, 31)) && sameSet(weekdays, range(1, 5))) {
      return [LAST_BUSINESS_DAY];
    }
    if (sameSet(months, [1, 4, 7, 10]) && only(days) && everyWeekday) return ["quarterly", null, only(days)];
    if (!everyMonth) return ["custom"];
    if (sameSet(days, range(1, 31))) {
      if (everyWeekday) return ["daily"];
      if (sameSet(weekdays, range(1, 5))) return ["weekdays"];
      if (only(weekdays)) return ["weekly", only(weekdays)];
    } else if (only(days) && everyWeekday) {
      return ["monthly_day", null, only(days)];
    } else if (sameSet(days, range(1, 7)) && only(weekdays)) {
      return ["monthly_first_weekday", only(weekdays)];
    }
    return ["custom"];
  }

  function start() {
    const kind = document.querySelector("select[name=schedule_kind][data-next-runs-url]");
    if (!kind) return;
    const form = kind.form;
    const input = (name) => form.elements.namedItem(name);
    const timeInput = input("schedule_time"), weekday = input("schedule_weekday"), day = input("schedule_day");
    const wordsBox = document.querySelector(".field-schedule_in_words .readonly");
    const runsBox = document.querySelector(".field-next_runs .readonly");
    [wordsBox, runsBox].forEach((box) => box && box.setAttribute("aria-live", "polite"));

    function showDetails() {
      const needsWeekday = ["weekly", "monthly_first_weekday"].includes(kind.value);
      const needsDay = ["monthly_day", "quarterly"].includes(kind.value);
      const custom = kind.value === "custom" || kind.value === "";
      const show = (name, shown) => {
        const box = form.querySelector(`.fieldBox.field-${name}`); // its own box in the row, not the row
        if (box) box.style.display = shown ? "" : "none"; // not `hidden`: the admin's CSS shows every fieldBox
      };
      show("schedule_time", !custom);
      show("schedule_weekday", needsWeekday);
      show("schedule_day", needsDay);
    }

    function writeCron() {
      const days = daysOf(kind.value, weekday.value, day.value);
      const [hour, minute] = (timeInput.value || "07:00").split(":").map(Number);
      if (!days) return;
      [String(minute), String(hour), ...days].forEach((value, index) => {
        input(CRON[index]).value = value;
      });
    }

    function readCron() {
      const cron = Object.fromEntries(CRON.map((field) => [field, input(field).value]));
      const [picked, pickedWeekday, pickedDay] = kindOf(cron, kind.value);
      kind.value = picked;
      if (picked !== "custom") {
        const pad = (text) => String(Number(text)).padStart(2, "0");
        timeInput.value = `${pad([...expand("hour", cron.hour)][0])}:${pad([...expand("minute", cron.minute)][0])}`;
      }
      if (pickedWeekday) weekday.value = pickedWeekday;
      if (pickedDay) day.value = pickedDay;
    }

    function showRuns(answer) {
      wordsBox.textContent = answer.words;
      const list = document.createElement("ol");
      list.className = "next-runs";
      for (const run of answer.next_runs) {
        const item = document.createElement("li");
        const moment = document.createElement("time");
        moment.className = "local-time";
        moment.dateTime = run.iso;
        moment.dataset.zone = answer.timezone;
        moment.textContent = run.words;
        item.append(moment);
        list.append(item);
      }
      const note = document.createElement("p");
      note.className = "help";
      note.textContent = `In the report's timezone (${answer.timezone}).`;
      runsBox.replaceChildren(list, note);
      // Beside each, the viewer's own time, as on a page drawn by the server (local_times.js).
      if (typeof showViewerTimes === "function") showViewerTimes();
    }

    let asked = 0;
    let timer = null;
    async function refresh() {
      if (!wordsBox || !runsBox) return;
      if (!input("schedule_enabled").checked) {
        wordsBox.textContent = "Not scheduled (runs only by hand)";
        runsBox.textContent = "—";
        return;
      }
      const query = new URLSearchParams(Object.fromEntries(CRON.map((field) => [field, input(field).value])));
      query.set("timezone", input("timezone").value);
      query.set("rule", kind.value === LAST_BUSINESS_DAY ? "last_business_day" : "");
      const mine = ++asked;
      try {
        const response = await fetch(`${kind.dataset.nextRunsUrl}?${query}`, { credentials: "same-origin" });
        const answer = await response.json();
        if (mine !== asked) return; // a later change has asked again
        if (answer.errors) {
          wordsBox.textContent = `Not a schedule that can run: ${answer.errors.join(" ")}`;
          runsBox.textContent = "—";
        } else {
          showRuns(answer);
        }
      } catch (error) {
        if (mine === asked) wordsBox.textContent = "The next runs could not be fetched; they are checked again on save.";
      }
    }
    const later = () => {
      clearTimeout(timer);
      timer = setTimeout(refresh, 250);
    };

    [kind, timeInput, weekday, day].forEach((element) =>
      element.addEventListener("change", () => {
        showDetails();
        writeCron();
        later();
      }),
    );
    timeInput.addEventListener("input", () => {
      writeCron();
      later();
    });
    day.addEventListener("input", () => {
      writeCron();
      later();
    });
    CRON.forEach((field) =>
      input(field).addEventListener("input", () => {
        readCron();
        showDetails();
        later();
      }),
    );
    input("timezone").addEventListener("change", later);
    input("schedule_enabled").addEventListener("change", later);
    showDetails(); // the page shows the stored schedule's words and runs already: asked again on a change
    // A new report's page has none to show yet: its default schedule's, at once.
    if (runsBox && runsBox.textContent.trim() === "—" && input("schedule_enabled").checked) refresh();
  }
  // The admin loads its scripts in the page's head, before the form exists.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
