// django-celery-beat's periodic task form: under the crontab field, the chosen crontab in words
// (what the package did in an inline script, which the site's Content Security Policy blocks).
(function () {
  "use strict";
  const script = document.currentScript;
  const select = document.getElementById("id_crontab");
  const help = document.querySelector(".field-crontab .help");
  const data = document.getElementById("readable-crontabs");
  if (!select || !help || !data) return;
  const readableCrontabs = JSON.parse(data.textContent);
  const originalHelp = script.dataset.crontabHelp || "";
  const translation = document.querySelector(".field-crontab_translation");
  if (translation) translation.hidden = true;

  function showTranslation() {
    const words = readableCrontabs[select.value];
    help.replaceChildren(document.createTextNode(originalHelp));
    if (words) help.append(document.createElement("br"), `Translation: ${words}`);
  }

  select.addEventListener("change", showTranslation);
})();
