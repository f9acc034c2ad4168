-- Route every new chest radiograph (CR or DX) to the CXR gateway; the SR and the heatmap
-- Secondary Capture the gateway sends back (modalities SR and OT, from AE CXRGATEWAY) stay here.
function OnStoredInstance(instanceId, tags, metadata, origin)
  local modality = tags['Modality']
  if metadata['RemoteAET'] == 'CXRGATEWAY' then
    return
  end
  if modality == 'CR' or modality == 'DX' then
    SendToModality(instanceId, 'cxrgateway')
  end
end
