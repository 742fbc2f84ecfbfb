// Show <time class="localtime"> values in the viewer's own time zone as well.
// dateStyle/timeStyle cannot be combined with timeZoneName (a TypeError), so
// the fields are named one by one.
document.querySelectorAll("time.localtime").forEach(function (el) {
  var when = new Date(el.getAttribute("datetime"));
  if (isNaN(when)) return;
  var local = when.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "numeric", minute: "2-digit", timeZoneName: "short"
  });
  var note = document.createElement("span");
  note.className = "muted";
  note.textContent = " (your time: " + local + ")";
  el.after(note);
});
