// Show <time class="localtime"> values in the viewer's own time zone as well.
document.querySelectorAll("time.localtime").forEach(function (el) {
  var when = new Date(el.getAttribute("datetime"));
  if (isNaN(when)) return;
  var local = when.toLocaleString(undefined, {
    dateStyle: "medium", timeStyle: "short", timeZoneName: "short"
  });
  var note = document.createElement("span");
  note.className = "muted";
  note.textContent = " (your time: " + local + ")";
  el.after(note);
});
