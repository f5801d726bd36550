-- task-id: the id of a stored message, or nil when the text is not a JSON object with a string id
-- (an unreadable message, which still has to be moved or dropped).
local function taskIdOf (message)
  local ok, decoded = pcall(cjson.decode, message)
  if ok and type(decoded) == 'table' and type(decoded.id) == 'string' then return decoded.id end
  return nil
end
